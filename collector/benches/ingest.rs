//! Durable ingest against a no-op handler on the same server stack.
//!
//! `cargo bench -p lineprobe-collector --bench ingest`
//!
//! One process, two runtimes: the server (the real listener, TLS and
//! router) on one, a load generator of keep-alive HTTP/1.1 connections on
//! the other. Every request carries a distinct report of about 2 KB. Three
//! phases, each a warm-up followed by a measured window:
//!
//! 1. no-op: the same `serve` with the same `ListenerOptions` and TLS, but a
//!    router that reads the body and answers 204 without parsing or storing;
//! 2. durable: `ingest_router` over a `Staging` on disk with the default
//!    settings (WAL synced before every answer, group commit), every answer must be
//!    201, closed loop (each connection sends its next report as soon as the
//!    last one is answered);
//!
//!    phases 1 and 2 alternate in rounds (both servers stay up), so that
//!    load from elsewhere on the machine weighs on both sides of the ratio,
//!    and run at each connection count of the sweep (64 and 256): a durable
//!    store needs requests in flight to fill its group commits, a collector
//!    serving a province's probes has hundreds at once, and 64 closed-loop
//!    connections measure the sync's latency more than the server's rate.
//!    The goal is judged at the last (largest) count, the others printed
//!    beside it;
//! 3. half load: durable again, open loop at half the rate phase 2 reached
//!    at the goal's connection count;
//!    latency counts from each request's scheduled start, so a stall shows
//!    up in the figures instead of silently slowing the generator
//!    (coordinated omission).
//!
//! Afterwards the store must hold exactly as many reports as were answered
//! 201. Goals (from the issue): durable >= 40 % of the no-op rate on a
//! 2-core machine, p99 < 50 ms at half load. Missing a goal prints MISS and
//! still exits 0; only a broken run (a failed request, an unexpected status,
//! a count mismatch) exits non-zero.
//!
//! Knobs (environment variables):
//! - `LINEPROBE_BENCH_SECS` measured seconds per phase (default 10)
//! - `LINEPROBE_BENCH_ROUNDS` rounds the no-op and durable phases alternate
//!   in, splitting their measured seconds (default 4: the VM's neighbours
//!   move the no-op rate by ±15 % from minute to minute, and short
//!   alternating rounds let a slow spell hit both sides alike)
//! - `LINEPROBE_BENCH_WARMUP_SECS` warm-up seconds per round (default 1)
//! - `LINEPROBE_BENCH_CONNS` concurrent connections, a comma-separated
//!   sweep whose last count is the goal's (default `64,256`)
//! - `LINEPROBE_BENCH_TLS` 1 for HTTPS (default), 0 for plain HTTP
//! - `LINEPROBE_BENCH_SERVER_THREADS` / `LINEPROBE_BENCH_CLIENT_THREADS`
//!   worker threads of each runtime (default: the number of cores)
//! - `LINEPROBE_BENCH_DIR` folder for the temporary store (default: the
//!   system temp folder; put it on the disk you want to measure)
//! - `LINEPROBE_BENCH_GROUP_COMMIT_WAIT_US` / `LINEPROBE_BENCH_GROUP_COMMIT_GAP_US`
//!   / `LINEPROBE_BENCH_GROUP_COMMIT_MAX` override `staging.group_commit_wait_us`
//!   / `group_commit_gap_us` / `group_commit_max` (default: the configuration
//!   defaults), for tuning

// Figures are counts and durations turned into floats for printing; the
// precision lost beyond 2^52 requests does not matter here.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use futures_util::future::join_all;
use http::{Method, Request, header};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use lineprobe_collector::{
    CertStore, CollectorConfig, IngestState, ListenerName, ListenerOptions, Metrics, Staging,
    StagingOptions, SystemClock, Traffic, bind, ingest_router, serve,
};
use lineprobe_shared::{Report, ReportId};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

/// The ingest path the generator posts to (one of the default paths).
const PATH: &str = "/api/v1/report";
/// Reports are padded with hops until their JSON is at least this long.
const TARGET_BODY_BYTES: usize = 1_950;
/// A placeholder id in the templates, replaced by a fresh id per request.
const ID_PLACEHOLDER: &str = "00000000-0000-7000-8000-000000000000";
/// Template variants (cities, hops, timings) the generator cycles through.
const VARIANTS: usize = 16;

// The collector binary's allocator (collector/src/main.rs), so that the
// figures are those of the program as shipped.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("\nbenchmark run BROKEN: see the errors above");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The knobs, from the environment.
#[derive(Debug, Clone)]
struct Knobs {
    secs: u64,
    warmup_secs: u64,
    /// Connection counts to measure at; the last is the goal's.
    conns: Vec<usize>,
    rounds: u64,
    tls: bool,
    server_threads: usize,
    client_threads: usize,
    dir: Option<PathBuf>,
    group_commit_wait_us: Option<u64>,
    group_commit_gap_us: Option<u64>,
    group_commit_max: Option<usize>,
}

impl Knobs {
    fn from_env() -> Result<Self> {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Ok(Self {
            secs: env_num("LINEPROBE_BENCH_SECS", 10)?.max(1),
            warmup_secs: env_num("LINEPROBE_BENCH_WARMUP_SECS", 1)?,
            conns: env_list("LINEPROBE_BENCH_CONNS", &[64, 256])?,
            rounds: env_num("LINEPROBE_BENCH_ROUNDS", 4)?.max(1),
            tls: env_num("LINEPROBE_BENCH_TLS", 1)? != 0,
            server_threads: env_num("LINEPROBE_BENCH_SERVER_THREADS", cores)?.max(1),
            client_threads: env_num("LINEPROBE_BENCH_CLIENT_THREADS", cores)?.max(1),
            dir: std::env::var_os("LINEPROBE_BENCH_DIR").map(PathBuf::from),
            group_commit_wait_us: env_opt("LINEPROBE_BENCH_GROUP_COMMIT_WAIT_US")?,
            group_commit_gap_us: env_opt("LINEPROBE_BENCH_GROUP_COMMIT_GAP_US")?,
            group_commit_max: env_opt("LINEPROBE_BENCH_GROUP_COMMIT_MAX")?,
        })
    }
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    Ok(env_opt(name)?.unwrap_or(default))
}

/// A comma-separated list of connection counts, each at least 1.
fn env_list(name: &str, default: &[usize]) -> Result<Vec<usize>> {
    let Ok(raw) = std::env::var(name) else {
        return Ok(default.to_vec());
    };
    let list = raw
        .split(',')
        .map(|v| v.trim().parse::<usize>().ok().filter(|n| *n > 0))
        .collect::<Option<Vec<_>>>()
        .filter(|l| !l.is_empty());
    list.ok_or_else(|| {
        anyhow::anyhow!(
            "{name}={raw:?} is not a list of connection counts; write e.g. `64,256` or unset it"
        )
    })
}

fn env_opt<T: std::str::FromStr>(name: &str) -> Result<Option<T>> {
    match std::env::var(name) {
        Err(_) => Ok(None),
        Ok(v) => {
            v.trim().parse().map(Some).map_err(|_| {
                anyhow::anyhow!("{name}={v:?} is not a whole number; unset it or fix it")
            })
        }
    }
}

fn runtime(name: &str, threads: usize) -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("starting the {name} runtime"))
}

#[allow(clippy::too_many_lines)] // the run reads top to bottom as the phases it measures
fn run() -> Result<bool> {
    let knobs = Knobs::from_env()?;
    let base = knobs.dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("lineprobe-bench-")
        .tempdir_in(&base)
        .with_context(|| format!("creating a temporary folder in {}", base.display()))?;
    let mut config = CollectorConfig {
        node_id: "bench-node".to_owned(),
        data_dir: dir.path().to_path_buf(),
        ..CollectorConfig::default()
    };
    config.public.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    // All load comes from one address, which the traffic defences would
    // rightly throttle as a flood; this benchmark measures raw ingest (the
    // `flood` benchmark measures the defences).
    config.traffic.enabled = false;
    // Nothing here acknowledges, and a fast machine stores over a million
    // reports in one run: with the production bound the half-load phase
    // would meet `staging_full`. The bound is tested elsewhere.
    config.staging.max_reports = 1_000_000_000;
    if let Some(us) = knobs.group_commit_wait_us {
        config.staging.group_commit_wait_us = us;
    }
    if let Some(us) = knobs.group_commit_gap_us {
        config.staging.group_commit_gap_us = us;
    }
    if let Some(max) = knobs.group_commit_max {
        config.staging.group_commit_max = max.max(1);
    }

    let server_rt = runtime("bench-server", knobs.server_threads)?;
    let client_rt = runtime("bench-client", knobs.client_threads)?;

    let certs = CertStore::load_or_generate(&config.tls, dir.path())?;
    let server_tls = if knobs.tls {
        Some(certs.server_config(None)?)
    } else {
        None
    };
    let connector = if knobs.tls {
        Some(client_tls(&certs)?)
    } else {
        None
    };
    let options = ListenerOptions::public(&config);
    let metrics = Metrics::new();

    let templates = Arc::new(Templates::new()?);
    println!(
        "lineprobe-collector ingest benchmark: {} cores, {:?} connections, {}, {} s measured per phase \
         (no-op and durable alternating in {} rounds), {} s warm-up per round, server/client threads {}/{}",
        std::thread::available_parallelism().map_or(0, usize::from),
        knobs.conns,
        if knobs.tls { "HTTPS" } else { "plain HTTP" },
        knobs.secs,
        knobs.rounds,
        knobs.warmup_secs,
        knobs.server_threads,
        knobs.client_threads,
    );
    println!(
        "store: {} (group commit: at most {} reports, wait up to {} µs, ended by a {} µs gap)",
        config.staging_path().display(),
        config.staging.group_commit_max,
        config.staging.group_commit_wait_us,
        config.staging.group_commit_gap_us
    );

    // Both servers run side by side; the generator loads one at a time.
    let noop = Server::start(
        &server_rt,
        &options,
        server_tls.clone(),
        noop_router(),
        &metrics,
    )?;
    let commits = Arc::new(CommitStats::default());
    let staging = open_staging(&config, &commits)?;
    let durable = Server::start(
        &server_rt,
        &options,
        server_tls,
        ingest_router(ingest_state(&config, &staging, &metrics)?),
        &metrics,
    )?;
    let noop_target = Target {
        addr: noop.addr,
        tls: connector.clone(),
    };
    let durable_target = Target {
        addr: durable.addr,
        tls: connector,
    };

    // Phases 1 and 2 alternate in rounds, so that a neighbour that loads
    // the machine for a while skews both sides of the ratio alike; the pair
    // runs at each connection count.
    let round_secs = Duration::from_secs_f64(knobs.secs as f64 / knobs.rounds as f64);
    let mut sweep: Vec<Level> = Vec::new();
    for &conns in &knobs.conns {
        let mut level = Level {
            conns,
            ..Level::default()
        };
        for _ in 0..knobs.rounds {
            let noop = load(
                &client_rt,
                &noop_target,
                &templates,
                &knobs,
                conns,
                round_secs,
                Pace::Closed,
                StatusCode::NO_CONTENT,
            )?;
            let before = commits.snapshot();
            let durable = load(
                &client_rt,
                &durable_target,
                &templates,
                &knobs,
                conns,
                round_secs,
                Pace::Closed,
                StatusCode::CREATED,
            )?;
            level.commits.add(&commits.snapshot().since(&before));
            if noop.rate() > 0.0 {
                level.round_ratios.push(durable.rate() / noop.rate());
            }
            level.noop.merge(noop);
            level.durable.merge(durable);
        }
        level.noop.latencies.sort_unstable();
        level.durable.latencies.sort_unstable();
        sweep.push(level);
    }
    noop.stop(&server_rt)?;
    let Some(goal_level) = sweep.last() else {
        bail!("LINEPROBE_BENCH_CONNS names no connection count");
    };

    // Phase 3: open loop at half the durable rate of the goal level.
    let half_rate = goal_level.durable.rate() / 2.0;
    let before = commits.snapshot();
    let mut half_result = load(
        &client_rt,
        &durable_target,
        &templates,
        &knobs,
        goal_level.conns,
        Duration::from_secs(knobs.secs),
        Pace::Open { rate: half_rate },
        StatusCode::CREATED,
    )?;
    half_result.latencies.sort_unstable();
    let half_commits = commits.snapshot().since(&before);
    durable.stop(&server_rt)?;
    let highest_seq = server_rt.block_on(async {
        let stats = staging.stats().await?;
        staging.close().await?;
        Ok::<_, lineprobe_collector::Error>(stats.highest_seq)
    })?;
    let (rows, distinct) = count_rows(&config.staging_path())?;

    // The figures.
    println!(
        "report body: mean {:.0} bytes ({} template variants, a fresh report_id each)",
        goal_level.durable.mean_body(),
        VARIANTS
    );
    println!();
    println!(
        "{:<26} {:>11} {:>9} {:>9} {:>9} {:>8} {:>10}",
        "phase", "reports/s", "p50 ms", "p99 ms", "max ms", "errors", "cpu cores"
    );
    for level in &sweep {
        level
            .noop
            .print_row(&format!("no-op (204), {} conns", level.conns));
        level
            .durable
            .print_row(&format!("durable (201), {} conns", level.conns));
    }
    half_result.print_row(&format!("half load @ {half_rate:.0}/s"));
    println!();
    for level in &sweep {
        level
            .commits
            .print(&format!("durable, {} conns:", level.conns));
    }
    half_commits.print("half load:");
    cpu_costs(&templates)?;
    println!();

    for level in &sweep {
        level.print_spread();
    }
    println!(
        "  half load: CPU per request {:.1} µs; by thread group {}",
        half_result.cpu_us_per_request(),
        half_result.by_group.per_request(half_result.total_ok)
    );
    for level in &sweep {
        let ratio = level.ratio();
        if level.conns == goal_level.conns {
            println!(
                "durable/no-op ratio at {} connections = {ratio:.2} (goal >= 0.40): {}",
                level.conns,
                verdict(ratio >= 0.40)
            );
        } else {
            println!(
                "durable/no-op ratio at {} connections = {ratio:.2} (for comparison)",
                level.conns
            );
        }
    }
    let p99 = half_result.percentile_ms(0.99);
    println!(
        "p99 at half load = {p99:.1} ms (goal < 50 ms): {}",
        verdict(p99 < 50.0)
    );

    // A broken run is a failure whatever the speed.
    let mut ok = true;
    let mut checked: Vec<(String, &Outcome)> = Vec::new();
    for level in &sweep {
        checked.push((format!("no-op at {} conns", level.conns), &level.noop));
        checked.push((format!("durable at {} conns", level.conns), &level.durable));
    }
    checked.push(("half load".to_owned(), &half_result));
    for (name, r) in checked {
        if r.failures() > 0 {
            ok = false;
            eprintln!(
                "{name}: {} failed request(s), {} unexpected status(es); first: {}",
                r.errors,
                r.unexpected,
                r.first_problem.as_deref().unwrap_or("-")
            );
        }
        if r.measured == 0 {
            ok = false;
            eprintln!("{name}: no request completed in the measured window");
        }
    }
    let answered = sweep.iter().map(|l| l.durable.total_ok).sum::<u64>() + half_result.total_ok;
    if rows != answered || distinct != answered || highest_seq != answered {
        ok = false;
        eprintln!(
            "store holds {rows} reports ({distinct} distinct ids, highest seq {highest_seq}) \
             but {answered} were answered 201"
        );
    } else {
        println!("store check: {rows} reports stored = {answered} answered 201");
    }
    Ok(ok)
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

/// A rustls client that trusts exactly the collector's certificate.
fn client_tls(certs: &CertStore) -> Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs.current_chain() {
        roots
            .add(cert)
            .context("trusting the generated certificate")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A listener served on the server runtime.
struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), lineprobe_collector::Error>>,
}

impl Server {
    fn start(
        rt: &Runtime,
        options: &ListenerOptions,
        tls: Option<Arc<rustls::ServerConfig>>,
        router: Router,
        metrics: &Arc<Metrics>,
    ) -> Result<Self> {
        let listener = rt.block_on(bind(SocketAddr::from(([127, 0, 0, 1], 0))))?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let task = rt.spawn(serve(
            listener,
            tls,
            options.clone(),
            router,
            shutdown.clone(),
            Some(metrics.listener_observer(ListenerName::Public)),
        ));
        Ok(Self {
            addr,
            shutdown,
            task,
        })
    }

    fn stop(self, rt: &Runtime) -> Result<()> {
        self.shutdown.cancel();
        rt.block_on(self.task)
            .context("the listener task panicked")??;
        Ok(())
    }
}

/// Reads the body (so that the connection stays usable, as a real handler
/// would) and answers 204 without looking at it.
fn noop_router() -> Router {
    Router::new().fallback(|body: Body| async move {
        match axum::body::to_bytes(body, 64 * 1024).await {
            Ok(_) => StatusCode::NO_CONTENT,
            Err(_) => StatusCode::BAD_REQUEST,
        }
    })
}

/// The ingest state exactly as the server builds it from `config`.
fn ingest_state(
    config: &CollectorConfig,
    staging: &Staging,
    metrics: &Arc<Metrics>,
) -> Result<IngestState> {
    Ok(IngestState::from_config(
        config,
        staging.clone(),
        Arc::clone(metrics),
        Arc::new(Traffic::new(
            config,
            Arc::new(SystemClock),
            Some(Arc::clone(metrics)),
        )),
    )?)
}

/// Opens the store with the default `[staging]` settings, counting commits.
fn open_staging(config: &CollectorConfig, commits: &Arc<CommitStats>) -> Result<Staging> {
    let mut options = StagingOptions::from_config(
        config.staging_path(),
        config.node_id.clone(),
        &config.staging,
    );
    let observer = Arc::clone(commits);
    options.on_commit = Some(Arc::new(move |took: Duration, n: usize| {
        observer.record(took, n);
    }));
    let observer = Arc::clone(commits);
    options.on_wal_restart = Some(Arc::new(move |took: Duration| {
        observer.record_restart(took);
    }));
    Ok(Staging::open(options)?)
}

/// Rows with content and distinct ids, read straight from the file.
fn count_rows(path: &std::path::Path) -> Result<(u64, u64)> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening {} to count its reports", path.display()))?;
    let (rows, distinct): (i64, i64) = conn.query_row(
        "SELECT count(*), count(DISTINCT report_id) FROM reports WHERE json IS NOT NULL",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    Ok((u64::try_from(rows)?, u64::try_from(distinct)?))
}

/// Commits seen by the staging observer.
#[derive(Debug)]
struct CommitStats {
    commits: AtomicU64,
    reports: AtomicU64,
    nanos: AtomicU64,
    max_batch: AtomicU64,
    /// Longest commit, ns (WAL checkpoints run inside a commit).
    max_nanos: AtomicU64,
    /// Commits that took over `SLOW_COMMIT`.
    slow: AtomicU64,
    /// WAL restarts, their total and longest time, ns (commits wait).
    restarts: AtomicU64,
    restart_nanos: AtomicU64,
    max_restart_nanos: AtomicU64,
    born: Instant,
}

/// A commit this long shows in the p99 of everything queued behind it.
const SLOW_COMMIT: Duration = Duration::from_millis(20);

impl Default for CommitStats {
    fn default() -> Self {
        Self {
            commits: AtomicU64::new(0),
            reports: AtomicU64::new(0),
            nanos: AtomicU64::new(0),
            max_batch: AtomicU64::new(0),
            max_nanos: AtomicU64::new(0),
            slow: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            restart_nanos: AtomicU64::new(0),
            max_restart_nanos: AtomicU64::new(0),
            born: Instant::now(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct CommitSnapshot {
    commits: u64,
    reports: u64,
    nanos: u64,
    max_batch: u64,
    max_nanos: u64,
    slow: u64,
    restarts: u64,
    restart_nanos: u64,
    max_restart_nanos: u64,
    /// Wall time the figures cover.
    wall: Duration,
}

impl CommitStats {
    fn record(&self, took: Duration, n: usize) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.reports.fetch_add(n as u64, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
        self.max_nanos.fetch_max(nanos, Ordering::Relaxed);
        if took > SLOW_COMMIT {
            self.slow.fetch_add(1, Ordering::Relaxed);
        }
        self.max_batch.fetch_max(n as u64, Ordering::Relaxed);
    }

    fn record_restart(&self, took: Duration) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.restart_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.max_restart_nanos.fetch_max(nanos, Ordering::Relaxed);
    }

    fn snapshot(&self) -> CommitSnapshot {
        CommitSnapshot {
            commits: self.commits.load(Ordering::Relaxed),
            reports: self.reports.load(Ordering::Relaxed),
            nanos: self.nanos.load(Ordering::Relaxed),
            max_batch: self.max_batch.load(Ordering::Relaxed),
            max_nanos: self.max_nanos.load(Ordering::Relaxed),
            slow: self.slow.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            restart_nanos: self.restart_nanos.load(Ordering::Relaxed),
            max_restart_nanos: self.max_restart_nanos.load(Ordering::Relaxed),
            wall: self.born.elapsed(),
        }
    }
}

impl CommitSnapshot {
    fn since(&self, earlier: &Self) -> Self {
        Self {
            commits: self.commits - earlier.commits,
            reports: self.reports - earlier.reports,
            nanos: self.nanos - earlier.nanos,
            // The running maximum over the whole run, not per phase.
            max_batch: self.max_batch,
            max_nanos: self.max_nanos,
            slow: self.slow - earlier.slow,
            restarts: self.restarts - earlier.restarts,
            restart_nanos: self.restart_nanos - earlier.restart_nanos,
            max_restart_nanos: self.max_restart_nanos,
            wall: self.wall.saturating_sub(earlier.wall),
        }
    }

    fn add(&mut self, other: &Self) {
        self.commits += other.commits;
        self.reports += other.reports;
        self.nanos += other.nanos;
        self.max_batch = self.max_batch.max(other.max_batch);
        self.max_nanos = self.max_nanos.max(other.max_nanos);
        self.slow += other.slow;
        self.restarts += other.restarts;
        self.restart_nanos += other.restart_nanos;
        self.max_restart_nanos = self.max_restart_nanos.max(other.max_restart_nanos);
        self.wall += other.wall;
    }

    fn print(&self, phase: &str) {
        let secs = self.wall.as_secs_f64().max(1e-3);
        if self.commits == 0 {
            println!("{phase}: no commits");
            return;
        }
        let commits = self.commits as f64;
        let total = self.nanos as f64 / 1e9;
        println!(
            "{phase} commits (warm-up included): {} ({:.0}/s), mean batch {:.1} reports (max so far {}), \
             mean time from batch start to durable {:.2} ms, {} over {} ms (longest so far {:.1} ms); \
             WAL restarts {} taking {:.0} ms in all, commits waiting through most of it (longest so far {:.1} ms)",
            self.commits,
            commits / secs,
            self.reports as f64 / commits,
            self.max_batch,
            total * 1e3 / commits,
            self.slow,
            SLOW_COMMIT.as_millis(),
            self.max_nanos as f64 / 1e6,
            self.restarts,
            self.restart_nanos as f64 / 1e6,
            self.max_restart_nanos as f64 / 1e6,
        );
    }
}

/// Single-threaded CPU cost of the steps ingest adds per report.
fn cpu_costs(templates: &Templates) -> Result<()> {
    const N: u32 = 2_000;
    let bodies: Vec<Bytes> = (0..N as usize).map(|i| templates.body(i)).collect();
    let per_report = |started: Instant| started.elapsed().as_secs_f64() * 1e6 / f64::from(N);

    let started = Instant::now();
    for body in &bodies {
        serde_json::from_slice::<Report>(body)?;
    }
    let serde_only = per_report(started);
    let started = Instant::now();
    let mut reports = Vec::with_capacity(bodies.len());
    for body in &bodies {
        reports.push(Report::from_submitted_json(body)?);
    }
    let decode = per_report(started);
    let started = Instant::now();
    let mut violations = 0_usize;
    for report in &reports {
        violations += usize::from(report.violations().into_result().is_err());
    }
    let validate = per_report(started);
    ensure!(violations == 0, "benchmark reports broke the schema");
    let started = Instant::now();
    let mut encoded = 0_usize;
    for report in &reports {
        encoded += report.to_json()?.len();
    }
    let encode = per_report(started);
    println!(
        "cpu per report (one thread): from_submitted_json {decode:.1} µs (plain serde {serde_only:.1} µs, \
         validation alone {validate:.1} µs), to_json {encode:.1} µs ({} bytes; \
         saved: the store keeps the probe's bytes and appends the envelope)",
        encoded / N as usize,
    );
    Ok(())
}

/// Report bodies: a few compact JSON variants split around the report id,
/// so that a fresh id per request costs one formatted UUID and a copy.
#[derive(Debug)]
struct Templates {
    parts: Vec<(String, String)>,
}

impl Templates {
    fn new() -> Result<Self> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/report.example.json");
        let raw = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let example: Value = serde_json::from_slice(&raw).context("the example report")?;
        let mut parts = Vec::with_capacity(VARIANTS);
        for variant in 0..VARIANTS {
            let text = padded_report(&example, variant)?;
            let Some((before, after)) = text.split_once(ID_PLACEHOLDER) else {
                bail!("the report template lost its id placeholder");
            };
            let pair = (before.to_owned(), after.to_owned());
            let sample = format!("{}{}{}", pair.0, ReportId::new_v7(), pair.1);
            Report::from_submitted_json(sample.as_bytes())
                .with_context(|| format!("benchmark report variant {variant} is invalid"))?;
            parts.push(pair);
        }
        Ok(Self { parts })
    }

    /// The `i`-th request's body: variant `i % VARIANTS` with a fresh id.
    fn body(&self, i: usize) -> Bytes {
        let (before, after) = &self.parts[i % self.parts.len()];
        let id = ReportId::new_v7().to_string();
        let mut out = String::with_capacity(before.len() + id.len() + after.len());
        out.push_str(before);
        out.push_str(&id);
        out.push_str(after);
        Bytes::from(out)
    }
}

/// The example report varied by `variant`, with hops added until it is
/// about 2 KB of compact JSON.
fn padded_report(example: &Value, variant: usize) -> Result<String> {
    const CITIES: [(&str, &str); 4] = [
        ("CN-GD", "深圳"),
        ("CN-GD", "广州"),
        ("CN-ZJ", "杭州"),
        ("CN-SC", "成都"),
    ];
    let mut report = example.clone();
    let (province, city) = CITIES[variant % CITIES.len()];
    report["report_id"] = json!(ID_PLACEHOLDER);
    report["install_id"] = json!(format!("BENCH-{variant:06}"));
    report["declared"]["province"] = json!(province);
    report["declared"]["city"] = json!(city);
    let mut ttl = 0_u8;
    let mut hops = Vec::new();
    loop {
        ttl += 1;
        hops.push(hop(variant, ttl));
        report["trace"]["hops"] = Value::Array(hops.clone());
        let text = serde_json::to_string(&report)?;
        if text.len() >= TARGET_BODY_BYTES {
            return Ok(text);
        }
        ensure!(
            ttl < 60,
            "cannot pad the report to {TARGET_BODY_BYTES} bytes"
        );
    }
}

/// A plausible hop: home gateway, carrier-grade NAT, a silent hop, then
/// backbone routers with names and growing round-trip times.
fn hop(variant: usize, ttl: u8) -> Value {
    let v = variant as u8;
    let base = f64::from(ttl) * 2.7 + f64::from(v % 5);
    let rtts = [base + 0.3, base + 0.1, base + 0.6];
    match ttl {
        1 => json!({"ttl": 1, "addrs": [format!("192.168.{v}.1")], "rtt_ms": [1.9, 1.7, 2.2],
                    "sent": 3, "received": 3}),
        2 => json!({"ttl": 2, "addrs": [format!("100.{}.{v}.1", 64 + v % 60)], "rtt_ms": rtts,
                    "sent": 3, "received": 3}),
        3 => json!({"ttl": 3, "addrs": [], "rtt_ms": [], "sent": 3, "received": 0}),
        _ => {
            let net = ["192.0.2", "198.51.100", "203.0.113"][usize::from(ttl) % 3];
            json!({
                "ttl": ttl,
                "addrs": [format!("{net}.{}", (u16::from(ttl) * 7 + u16::from(v)) % 250 + 1)],
                "names": [format!("ae{}-{v}.cr{ttl:02}.backbone.example.net", ttl % 4)],
                "rtt_ms": rtts,
                "sent": 3,
                "received": 3,
            })
        }
    }
}

/// Where the generator connects.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    tls: Option<TlsConnector>,
}

impl Target {
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let Some(tls) = &self.tls else {
            return handshake(tcp).await;
        };
        let name = ServerName::try_from("localhost")?;
        let stream = tls
            .connect(name, tcp)
            .await
            .context("TLS handshake with the collector")?;
        handshake(stream).await
    }
}

async fn handshake<I>(io: I) -> Result<SendRequest<Full<Bytes>>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the server closes.
        let _ = conn.await;
    });
    Ok(sender)
}

/// How requests are started.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// Each connection sends its next request when the last is answered.
    Closed,
    /// Requests start on a fixed schedule at `rate` per second overall.
    Open { rate: f64 },
}

/// What one connection (and, merged, one phase) saw.
#[derive(Debug, Default)]
struct Outcome {
    /// Latencies of measured requests, µs.
    latencies: Vec<u32>,
    /// Requests answered with the expected status in the measured window.
    measured: u64,
    /// All requests answered with the expected status, warm-up included.
    total_ok: u64,
    /// Request bytes sent (bodies), all requests.
    body_bytes: u64,
    bodies: u64,
    /// Requests that failed at the connection or HTTP level.
    errors: u64,
    /// Requests answered with another status.
    unexpected: u64,
    first_problem: Option<String>,
    /// The measured window, seconds (summed over rounds).
    secs: f64,
    /// CPU seconds the whole process used, warm-up included.
    cpu_secs: f64,
    /// Wall seconds those CPU seconds were spent in.
    wall_secs: f64,
    /// The CPU seconds by thread group (see [`ThreadCpu`]).
    by_group: ThreadCpu,
}

impl Outcome {
    fn merge(&mut self, other: Self) {
        self.latencies.extend(other.latencies);
        self.measured += other.measured;
        self.total_ok += other.total_ok;
        self.body_bytes += other.body_bytes;
        self.bodies += other.bodies;
        self.errors += other.errors;
        self.unexpected += other.unexpected;
        self.secs += other.secs;
        self.cpu_secs += other.cpu_secs;
        self.wall_secs += other.wall_secs;
        self.by_group.add(&other.by_group);
        if self.first_problem.is_none() {
            self.first_problem = other.first_problem;
        }
    }

    fn problem(&mut self, what: String) {
        self.first_problem.get_or_insert(what);
    }

    fn failures(&self) -> u64 {
        self.errors + self.unexpected
    }

    fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.measured as f64 / self.secs
        } else {
            0.0
        }
    }

    /// CPU the whole process (server, load generator, store threads) spent
    /// per request answered as expected, warm-up included, in µs.
    fn cpu_us_per_request(&self) -> f64 {
        if self.total_ok > 0 {
            self.cpu_secs * 1e6 / self.total_ok as f64
        } else {
            0.0
        }
    }

    fn mean_body(&self) -> f64 {
        self.body_bytes as f64 / self.bodies.max(1) as f64
    }

    /// Nearest-rank percentile of the sorted latencies, in ms.
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = (p * self.latencies.len() as f64).ceil() as usize;
        let i = rank.clamp(1, self.latencies.len()) - 1;
        f64::from(self.latencies[i]) / 1e3
    }

    fn print_row(&self, phase: &str) {
        println!(
            "{phase:<22} {:>11.1} {:>9.2} {:>9.2} {:>9.2} {:>8} {:>10.2}",
            self.rate(),
            self.percentile_ms(0.50),
            self.percentile_ms(0.99),
            self.percentile_ms(1.0),
            self.failures(),
            if self.wall_secs > 0.0 {
                self.cpu_secs / self.wall_secs
            } else {
                0.0
            },
        );
    }
}

/// The no-op and durable phases at one connection count.
#[derive(Debug, Default)]
struct Level {
    conns: usize,
    noop: Outcome,
    durable: Outcome,
    commits: CommitSnapshot,
    /// The durable/no-op ratio of each round on its own.
    round_ratios: Vec<f64>,
}

impl Level {
    /// How far the rounds' own ratios spread, and the ratio of the CPU
    /// the whole process spent per answered request (warm-up included): time
    /// stolen by the hypervisor is in neither CPU figure, so this one moves
    /// less with the neighbours than the rates do.
    fn print_spread(&self) {
        let mut ratios = self.round_ratios.clone();
        ratios.sort_by(f64::total_cmp);
        let (Some(low), Some(high)) = (ratios.first(), ratios.last()) else {
            return;
        };
        let median = ratios[ratios.len() / 2];
        let noop_us = self.noop.cpu_us_per_request();
        let durable_us = self.durable.cpu_us_per_request();
        println!(
            "  {} conns: per-round ratios {low:.2}..{high:.2} (median {median:.2}); CPU per request \
             no-op {noop_us:.1} µs, durable {durable_us:.1} µs (CPU-cost ratio {:.2})",
            self.conns,
            if durable_us > 0.0 {
                noop_us / durable_us
            } else {
                0.0
            }
        );
        println!(
            "    CPU µs per request by thread group: no-op {}; durable {}",
            self.noop.by_group.per_request(self.noop.total_ok),
            self.durable.by_group.per_request(self.durable.total_ok)
        );
    }

    fn ratio(&self) -> f64 {
        if self.noop.rate() > 0.0 {
            self.durable.rate() / self.noop.rate()
        } else {
            0.0
        }
    }
}

/// Runs one phase: connects, warms up, measures, merges.
#[allow(clippy::too_many_arguments)] // one call per phase, every argument differs
fn load(
    rt: &Runtime,
    target: &Target,
    templates: &Arc<Templates>,
    knobs: &Knobs,
    conns: usize,
    secs: Duration,
    pace: Pace,
    expect: StatusCode,
) -> Result<Outcome> {
    let cpu_before = process_cpu_secs();
    let groups_before = ThreadCpu::now();
    let mut outcome = rt.block_on(async {
        let senders = join_all((0..conns).map(|_| target.connect()))
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        let start = Instant::now();
        let measure_from = start + Duration::from_secs(knobs.warmup_secs);
        let until = measure_from + secs;
        let counter = Arc::new(AtomicU64::new(0));
        let conns = senders.len().max(1);
        let tasks: Vec<_> = senders
            .into_iter()
            .enumerate()
            .map(|(i, sender)| {
                let worker = Worker {
                    sender,
                    templates: Arc::clone(templates),
                    counter: Arc::clone(&counter),
                    expect,
                    measure_from,
                    until,
                };
                let schedule = match pace {
                    Pace::Closed => None,
                    Pace::Open { rate } => {
                        // Each connection sends every `interval`, the
                        // connections staggered evenly across it.
                        let interval = Duration::from_secs_f64(conns as f64 / rate.max(1e-3));
                        let offset = interval.mul_f64(i as f64 / conns as f64);
                        Some((start + offset, interval))
                    }
                };
                tokio::spawn(worker.run(schedule))
            })
            .collect();
        let mut total = Outcome::default();
        for task in join_all(tasks).await {
            total.merge(task.context("a load generator task panicked")?);
        }
        // Only the phase as a whole has a window; workers report none.
        total.secs = secs.as_secs_f64();
        Ok::<_, anyhow::Error>(total)
    })?;
    outcome.cpu_secs = process_cpu_secs() - cpu_before;
    outcome.by_group = ThreadCpu::now().since(&groups_before);
    outcome.wall_secs = secs.as_secs_f64() + knobs.warmup_secs as f64;
    Ok(outcome)
}

/// CPU seconds by thread group: which part of the process the durable
/// path's extra cost per request lands in (the server's runtime, the load
/// generator's, the staging threads), without a profiler. Threads are told
/// apart by name; one that ended between two readings loses its share,
/// which is why the total is read separately from the whole process.
#[derive(Debug, Default, Clone, Copy)]
struct ThreadCpu {
    /// CPU seconds per group, in [`THREAD_GROUPS`] order, then the rest.
    secs: [f64; THREAD_GROUPS.len() + 1],
}

/// Thread-name prefixes and the group each belongs to. Linux keeps the
/// first 15 bytes of a thread's name.
const THREAD_GROUPS: [(&str, &str); 5] = [
    ("bench-server", "server"),
    ("bench-client", "client"),
    ("staging-writer", "writer"),
    ("staging-sync", "sync"),
    ("staging-checkp", "checkpoint"),
];

impl ThreadCpu {
    fn now() -> Self {
        let mut out = Self::default();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return out;
        };
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let name = head.split_once('(').map_or("", |(_, name)| name);
            let i = THREAD_GROUPS
                .iter()
                .position(|(prefix, _)| name.starts_with(prefix))
                .unwrap_or(THREAD_GROUPS.len());
            out.secs[i] += stat_cpu_secs(rest);
        }
        out
    }

    fn since(&self, before: &Self) -> Self {
        let mut out = *self;
        for (slot, earlier) in out.secs.iter_mut().zip(before.secs) {
            *slot = (*slot - earlier).max(0.0);
        }
        out
    }

    fn add(&mut self, other: &Self) {
        for (slot, more) in self.secs.iter_mut().zip(other.secs) {
            *slot += more;
        }
    }

    /// "server 20.1, client 9.8, …" in µs per request.
    fn per_request(&self, requests: u64) -> String {
        let n = requests.max(1) as f64;
        THREAD_GROUPS
            .iter()
            .map(|(_, group)| *group)
            .chain(std::iter::once("other"))
            .zip(self.secs)
            .filter(|(_, secs)| *secs > 0.0)
            .map(|(group, secs)| format!("{group} {:.1}", secs * 1e6 / n))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// User and system CPU seconds from the fields of a `stat` file after the
/// parenthesised command name (utime and stime are the 12th and 13th).
fn stat_cpu_secs(after_name: &str) -> f64 {
    // Linux reports in clock ticks, which are 1/100 s on every mainstream
    // configuration (`getconf CLK_TCK`).
    const TICKS_PER_SEC: f64 = 100.0;
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    ticks as f64 / TICKS_PER_SEC
}

/// CPU seconds this process used so far (user and system), from
/// `/proc/self/stat`; 0 where that does not exist.
fn process_cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| stat_cpu_secs(rest)))
        .unwrap_or(0.0)
}

/// One connection of the load generator.
struct Worker {
    sender: SendRequest<Full<Bytes>>,
    templates: Arc<Templates>,
    counter: Arc<AtomicU64>,
    expect: StatusCode,
    measure_from: Instant,
    until: Instant,
}

impl Worker {
    async fn run(mut self, schedule: Option<(Instant, Duration)>) -> Outcome {
        let mut out = Outcome::default();
        let mut k = 0_u32;
        loop {
            // Latency counts from the scheduled start in the open loop.
            let planned = match schedule {
                None => Instant::now(),
                Some((first, interval)) => first + interval * k,
            };
            if planned >= self.until {
                break;
            }
            k += 1;
            if schedule.is_some() {
                tokio::time::sleep_until(planned.into()).await;
            }
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let body = self.templates.body(usize::try_from(n).unwrap_or_default());
            out.body_bytes += body.len() as u64;
            out.bodies += 1;
            let request = Request::builder()
                .method(Method::POST)
                .uri(PATH)
                .header(header::HOST, "localhost")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::USER_AGENT, "lineprobe-bench")
                .body(Full::new(body));
            let request = match request {
                Ok(r) => r,
                Err(e) => {
                    out.errors += 1;
                    out.problem(format!("building the request: {e}"));
                    break;
                }
            };
            let sent = async {
                self.sender.ready().await?;
                let response = self.sender.send_request(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, body))
            }
            .await;
            let latency = planned.elapsed();
            match sent {
                Ok((status, _)) if status == self.expect => {
                    out.total_ok += 1;
                    if planned >= self.measure_from {
                        out.measured += 1;
                        out.latencies
                            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
                    }
                }
                Ok((status, body)) => {
                    out.unexpected += 1;
                    out.problem(format!(
                        "status {status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(300)])
                    ));
                }
                Err(e) => {
                    // The connection is unusable after a transport error.
                    out.errors += 1;
                    out.problem(format!("request failed: {e}"));
                    break;
                }
            }
        }
        out
    }
}
