//! Helpers shared by the end-to-end and fault tests of `lineprobe-sync`: the
//! real binary run as a child process (bounded in time, killed when its guard
//! drops), real collectors on loopback (in this process, or the collector
//! binary as a process of its own), a proxy in front of an export API that
//! loses acknowledgements, and a fresh database per test on SQLite and, when
//! `LINEPROBE_TEST_PG` names a server, on PostgreSQL (dropped afterwards,
//! also when the test fails).
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc
)] // test helpers: a failed unwrap is a failed test; each test file uses a part

#[path = "../../../testsupport/ports.rs"]
mod ports;

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use lineprobe_collector::{
    CollectorConfig, Overrides, RunningCollector, Staging, StagingConfig, StagingOptions,
    StagingStats,
};
use lineprobe_shared::{InstallId, Report, ReportId};
use lineprobe_sync::{DemoCase, Store};
use serde_json::{Value, json};
use sqlx::Connection as _;

#[path = "../pgscratch/mod.rs"]
mod pgscratch;
use pgscratch::ScratchPg;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The export token of every test collector.
pub const TOKEN: &str = "sync-e2e-export-token-0123456789abcdefgh";
/// The environment variable the sync configurations name in `token_env`;
/// set only in the children's environment.
pub const TOKEN_ENV: &str = "LP_SYNC_TEST_EXPORT_TOKEN";
/// Longest any single run of the binary may take.
pub const RUN_BOUND: Duration = Duration::from_mins(3);

/// Runs `future`, failing the test when it takes longer than `limit`.
pub async fn bounded<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

/// The repository's `config/` folder.
pub fn repo_config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

/// The demo IP data, `config/demo/`.
pub fn demo_data_dir() -> PathBuf {
    repo_config_dir().join("demo")
}

// --- pipelines over fixed address data -------------------------------------

/// Knows every address as China Mobile in Shenzhen, Guangdong.
#[derive(Debug)]
struct Shenzhen(lineprobe_sync::IpFacts);

impl lineprobe_sync::IpSource for Shenzhen {
    fn name(&self) -> &'static str {
        "plan"
    }

    fn data_version(&self) -> &'static str {
        "test"
    }

    fn lookup(
        &self,
        _ip: std::net::IpAddr,
    ) -> Result<Option<lineprobe_sync::IpFacts>, lineprobe_sync::Error> {
        Ok(Some(self.0.clone()))
    }
}

/// A pipeline on the embedded catalogs whose one address source says every
/// address is China Mobile's in Shenzhen, Guangdong.
pub fn shenzhen_pipeline() -> (Arc<lineprobe_shared::Catalog>, lineprobe_sync::Pipeline) {
    let catalog = Arc::new(lineprobe_shared::Catalog::embedded().unwrap());
    (Arc::clone(&catalog), shenzhen_pipeline_on(catalog))
}

/// [`shenzhen_pipeline`] on the catalogs `catalog`.
pub fn shenzhen_pipeline_on(catalog: Arc<lineprobe_shared::Catalog>) -> lineprobe_sync::Pipeline {
    let facts = lineprobe_sync::IpFacts {
        carrier: Some(catalog.carrier("china_mobile").unwrap().id.clone()),
        province: Some(catalog.province("CN-GD").unwrap().id.clone()),
        city: catalog.city(None, "深圳").unwrap().code.clone(),
        ..lineprobe_sync::IpFacts::default()
    };
    lineprobe_sync::Pipeline::new(
        catalog,
        Arc::new(lineprobe_sync::Chain::new(vec![Box::new(Shenzhen(facts))])),
        lineprobe_shared::Classifier::new(&lineprobe_shared::ClassifierConfig::default()).unwrap(),
    )
}

/// The demo case `label`, made now.
pub fn demo_case(label: &str) -> DemoCase {
    lineprobe_sync::demo_cases(chrono::Utc::now().fixed_offset())
        .unwrap()
        .into_iter()
        .find(|c| c.label == label)
        .unwrap_or_else(|| panic!("no demo case {label}"))
}

/// A pulled report made from `template` (a report's JSON): its id ending
/// in `seq`, received at `at` by `node` (seq `seq`) from `peer_ip`, then
/// changed by `edit` (which may add to the envelope, say its trust).
pub fn pulled_report(
    template: &Value,
    seq: u8,
    node: &str,
    peer_ip: &str,
    at: chrono::DateTime<chrono::Utc>,
    edit: impl FnOnce(&mut Value),
) -> lineprobe_sync::PulledReport {
    let mut doc = template.clone();
    let id = doc["report_id"].as_str().unwrap().to_owned();
    doc["report_id"] = json!(format!("{}{seq:02x}", &id[..id.len() - 2]));
    doc["envelope"] = json!({
        "received_at": at.to_rfc3339(),
        "peer_ip": peer_ip,
        "path": "/api/v1/report",
        "node_id": node,
        "seq": seq,
    });
    edit(&mut doc);
    lineprobe_sync::PulledReport {
        seq: u64::from(seq),
        report_id: doc["report_id"].as_str().map(str::to_owned),
        received_at_ms: Some(at.timestamp_millis()),
        body: serde_json::to_vec(&doc).unwrap(),
    }
}

/// Stores `reports` as one pull of `collector` from node `node`, with the
/// cursor after the highest seq.
pub async fn commit_pulled(
    store: &Store,
    collector: &str,
    node: &str,
    reports: &[lineprobe_sync::PulledReport],
) {
    let next_after = reports.iter().map(|r| r.seq).max().unwrap_or(0);
    store
        .commit_pull(&lineprobe_sync::PullBatch {
            collector,
            node_id: node,
            reports,
            next_after,
            pulled_at_ms: chrono::Utc::now().timestamp_millis(),
        })
        .await
        .unwrap();
}

/// The demo's China Mobile address plan, and the same plan with the block
/// of the Shenzhen line's egress (`120.229.0.0/16`) moved to Changsha,
/// Hunan: new IP data under which that line's egress is in another
/// province.
pub fn demo_plan_and_moved() -> (String, String) {
    let plan = std::fs::read_to_string(demo_data_dir().join("ipplan.csv")).unwrap();
    let old = "120.229.0.0/16,中国移动,广东,深圳,家宽,";
    assert!(
        plan.contains(old),
        "the demo plan changed; update the tests"
    );
    let moved = plan.replace(old, "120.229.0.0/16,中国移动,湖南,长沙,家宽,");
    (plan, moved)
}

/// A TOML string literal.
pub fn q(text: impl AsRef<str>) -> String {
    toml::Value::String(text.as_ref().to_owned()).to_string()
}

/// A TOML string literal of a path.
pub fn qp(path: &Path) -> String {
    q(path.display().to_string())
}

// --- child processes --------------------------------------------------------

static NEXT_LOG: AtomicU64 = AtomicU64::new(0);

/// A child process whose stdout and stderr go to files; killed (SIGKILL)
/// and reaped when dropped, whatever the test did.
pub struct Proc {
    child: Child,
    label: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// How a child ended and what it printed.
#[derive(Debug)]
pub struct Output {
    pub label: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The exit code (`None` when a signal ended the process).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Fails the test unless the process exited 0.
    #[track_caller]
    pub fn success(self) -> Self {
        assert!(
            self.status.success(),
            "{} exited with {}\n--- stdout\n{}\n--- stderr\n{}",
            self.label,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "{} printed no JSON ({e}):\n{}\n--- stderr\n{}",
                self.label, self.stdout, self.stderr
            )
        })
    }
}

impl Proc {
    /// Starts `command`, its output going to files in `logs`.
    pub fn spawn(mut command: Command, logs: &Path, label: &str) -> Proc {
        let n = NEXT_LOG.fetch_add(1, Ordering::Relaxed);
        let safe: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(40)
            .collect();
        std::fs::create_dir_all(logs).unwrap();
        let stdout = logs.join(format!("{n:03}-{safe}.stdout"));
        let stderr = logs.join(format!("{n:03}-{safe}.stderr"));
        command
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap());
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
        Proc {
            child,
            label: label.to_owned(),
            stdout,
            stderr,
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits at most `limit` for the process to exit; kills it and fails
    /// the test when it does not.
    pub async fn wait(&mut self, limit: Duration) -> Output {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return self.output(status);
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not exit within {limit:?}\n--- stderr\n{}",
                    self.label,
                    read_lossy(&self.stderr)
                );
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }

    /// `kill -9`; returns whether the process was still running.
    pub fn kill9(&mut self) -> bool {
        let running = self.running();
        let _ = self.child.kill();
        let _ = self.child.wait();
        running
    }

    /// Sends `signal` (`-TERM`, …) with kill(1).
    pub fn signal(&mut self, signal: &str) {
        assert!(self.running(), "{} is not running", self.label);
        let status = Command::new("kill")
            .args([signal, &self.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {} failed", self.label);
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr)
    }

    fn output(&self, status: ExitStatus) -> Output {
        Output {
            label: self.label.clone(),
            status,
            stdout: read_lossy(&self.stdout),
            stderr: read_lossy(&self.stderr),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// The `lineprobe-sync` binary with a configuration file and a database.
#[derive(Debug, Clone)]
pub struct SyncCli {
    /// `--config`.
    pub config: PathBuf,
    /// `--database`; `None` leaves the configured one.
    pub database: Option<String>,
    /// Where the children's output files go.
    pub logs: PathBuf,
    /// Extra environment of the children.
    pub env: Vec<(String, String)>,
}

impl SyncCli {
    /// `lineprobe-sync --config CONFIG --database DATABASE` with the token
    /// variable set.
    pub fn new(config: &Path, database: &str, logs: &Path) -> Self {
        Self {
            config: config.to_path_buf(),
            database: Some(database.to_owned()),
            logs: logs.to_path_buf(),
            env: Vec::new(),
        }
    }

    /// The command for `args`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lineprobe-sync"));
        command.arg("--config").arg(&self.config);
        if let Some(db) = &self.database {
            command.arg("--database").arg(db);
        }
        command
            .args(args)
            .env(TOKEN_ENV, TOKEN)
            .env("RUST_LOG", "warn,lineprobe_sync=info");
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }

    /// Starts `lineprobe-sync … args`.
    pub fn spawn(&self, args: &[&str]) -> Proc {
        Proc::spawn(self.command(args), &self.logs, &args.join(" "))
    }

    /// Runs `lineprobe-sync … args` to its end (bounded).
    pub async fn run(&self, args: &[&str]) -> Output {
        self.spawn(args).wait(RUN_BOUND).await
    }

    /// Runs it and fails the test unless it exits 0.
    pub async fn ok(&self, args: &[&str]) -> Output {
        self.run(args).await.success()
    }

    /// `status` as JSON.
    pub async fn status(&self) -> Value {
        self.ok(&["status"]).await.json()
    }
}

/// The cursor row of `collector` in a `status` answer.
pub fn cursor_of<'a>(status: &'a Value, collector: &str) -> &'a Value {
    status["collectors"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["collector"] == collector))
        .unwrap_or_else(|| panic!("no cursor for {collector} in {status:#}"))
}

// --- databases --------------------------------------------------------------

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database made for one test: an SQLite file in the test's folder, or a
/// PostgreSQL database dropped when this value drops.
#[derive(Debug)]
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    sqlite_path: Option<PathBuf>,
    pg: Option<PgDatabase>,
}

/// Dropped when its `TestDb` drops, also while unwinding from a failure.
#[derive(Debug)]
struct PgDatabase(ScratchPg);

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Drop runs on a runtime thread (or while unwinding from a failed
        // assertion): the database is dropped from a thread of its own with
        // its own runtime, bounded, so that cleanup happens either way.
        let pg = self.0.clone();
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(async {
                let name = &pg.name;
                match tokio::time::timeout(Duration::from_secs(20), pg.drop_database()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => eprintln!("cannot drop the test database {name}: {e}"),
                    Err(_) => eprintln!("dropping the test database {name} timed out"),
                }
            });
        });
        let _ = done.join();
    }
}

/// Every backend this run tests: a fresh SQLite file in `dir`, and a fresh
/// PostgreSQL database when `LINEPROBE_TEST_PG` is set (skipped with a
/// printed reason otherwise, unless `LINEPROBE_REQUIRE_LAB=1`).
pub async fn backends(test: &str, dir: &Path) -> Vec<TestDb> {
    let mut all = vec![TestDb::sqlite(&dir.join("sqlite").join("sync.sqlite3"))];
    if let Some(pg) = TestDb::postgres(test).await {
        all.push(pg);
    }
    all
}

/// The database of one backend for one test: a fresh SQLite file in `dir`,
/// or a fresh PostgreSQL database (`None` when skipped, see [`backends`]).
pub async fn backend(kind: Backend, test: &str, dir: &Path) -> Option<TestDb> {
    match kind {
        Backend::Sqlite => Some(TestDb::sqlite(&dir.join("sqlite").join("sync.sqlite3"))),
        Backend::Postgres => TestDb::postgres(test).await,
    }
}

impl TestDb {
    /// An SQLite database at `path` (created on first open).
    pub fn sqlite(path: &Path) -> TestDb {
        TestDb {
            backend: Backend::Sqlite,
            url: format!("sqlite://{}", path.display()),
            sqlite_path: Some(path.to_path_buf()),
            pg: None,
        }
    }

    /// A fresh PostgreSQL database, or `None` (with the reason printed)
    /// when none can be had and the lab is not required.
    pub async fn postgres(test: &str) -> Option<TestDb> {
        let pg = ScratchPg::create(test, "e2e").await?;
        Some(TestDb {
            backend: Backend::Postgres,
            url: pg.url.clone(),
            sqlite_path: None,
            pg: Some(PgDatabase(pg)),
        })
    }

    /// "sqlite" or "postgres", for messages.
    pub fn label(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// The store, opened through the library.
    pub async fn store(&self) -> Store {
        Store::open(&self.url).await.unwrap()
    }

    /// Every raw report row: (node, seq, report id, state), in id order.
    pub async fn raw_rows(&self) -> Vec<RawRow> {
        // A report's state is its outcome's; without one it is pending.
        const SQL: &str = "SELECT r.node_id, r.seq, r.report_id, COALESCE(o.state, 'pending') \
             FROM raw_reports r LEFT JOIN raw_outcomes o ON o.id = r.id ORDER BY r.id";
        let rows: Vec<(String, i64, Option<String>, String)> = match self.backend {
            Backend::Sqlite => {
                let mut conn = self.sqlite_conn().await;
                let rows = sqlx::query_as(SQL).fetch_all(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                rows
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                let rows = sqlx::query_as(SQL).fetch_all(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                rows
            }
        };
        rows.into_iter()
            .map(|(node, seq, report_id, state)| RawRow {
                node,
                seq: u64::try_from(seq).unwrap(),
                report_id,
                state,
            })
            .collect()
    }

    /// Runs one SQL statement (test set-up such as rewinding a cursor).
    pub async fn execute(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self.backend {
            Backend::Sqlite => {
                let mut conn = self.sqlite_conn().await;
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
        }
    }

    /// SQLite's `PRAGMA integrity_check` and foreign key check; on both
    /// backends, every raw report in exactly one state and every processed
    /// one tied to an observation.
    pub async fn integrity_check(&self) {
        if self.backend == Backend::Sqlite {
            let mut conn = self.sqlite_conn().await;
            let problems: Vec<(String,)> = sqlx::query_as("PRAGMA integrity_check")
                .fetch_all(&mut conn)
                .await
                .unwrap();
            assert_eq!(
                problems,
                vec![("ok".to_owned(),)],
                "SQLite integrity check of {}",
                self.url
            );
            let fk: Vec<(String, i64, String, i64)> = sqlx::query_as("PRAGMA foreign_key_check")
                .fetch_all(&mut conn)
                .await
                .unwrap();
            assert!(fk.is_empty(), "foreign key violations: {fk:?}");
            conn.close().await.unwrap();
        }
        let rows = self.raw_rows().await;
        let store = self.store().await;
        let counts = store.counts().await.unwrap();
        assert_eq!(counts.raw, rows.len() as u64);
        assert_eq!(
            counts.raw,
            counts.pending + counts.processed + counts.quarantined,
            "every raw report is pending, processed or quarantined: {counts:?}"
        );
        store.close().await;
    }

    async fn sqlite_conn(&self) -> sqlx::SqliteConnection {
        let path = self.sqlite_path.as_ref().expect("an SQLite database");
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(Duration::from_secs(10));
        sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap()
    }
}

/// One stored raw report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRow {
    pub node: String,
    pub seq: u64,
    pub report_id: Option<String>,
    pub state: String,
}

/// Checks that `rows` hold every seq from 1 to `upto` of `node` exactly
/// once and nothing else of it, and that no report id is stored twice.
#[track_caller]
pub fn assert_exactly_once(rows: &[RawRow], node: &str, upto: u64, what: &str) {
    let mut seqs: Vec<u64> = rows
        .iter()
        .filter(|r| r.node == node)
        .map(|r| r.seq)
        .collect();
    seqs.sort_unstable();
    let expected: Vec<u64> = (1..=upto).collect();
    if seqs != expected {
        let mut dup = seqs.clone();
        dup.dedup();
        let missing: Vec<u64> = expected
            .iter()
            .filter(|s| seqs.binary_search(s).is_err())
            .take(5)
            .copied()
            .collect();
        panic!(
            "{what}: node {node} should hold seqs 1..={upto} once each; it holds {} rows \
             ({} distinct), missing e.g. {missing:?}, highest {:?}",
            seqs.len(),
            dup.len(),
            seqs.last()
        );
    }
    let mut ids = BTreeMap::new();
    for r in rows {
        let id = r
            .report_id
            .clone()
            .expect("every raw report has its report id");
        *ids.entry(id).or_insert(0_usize) += 1;
    }
    let doubled: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        doubled.is_empty(),
        "{what}: report ids stored twice: {doubled:?}"
    );
}

// --- collectors -------------------------------------------------------------

/// A collector running in this process on loopback; its public listener
/// trusts `X-Forwarded-For` from 127.0.0.0/8 (a load balancer on loopback).
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub node: String,
    pub tls: bool,
    running: Option<RunningCollector>,
}

impl Lab {
    /// A collector named `node`, HTTPS with its generated certificate when
    /// `tls`, plain HTTP otherwise; `max_batch` reports per export page.
    pub async fn start(node: &str, tls: bool, max_batch: usize) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let overrides = Overrides {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            export_listen: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(dir.path().to_path_buf()),
            plain_http: !tls,
        };
        let toml = format!(
            "node_id = {node}\n[public]\ntrusted_proxies = [\"127.0.0.0/8\"]\n[export]\n\
             token = {token}\nmax_batch = {max_batch}\n[shutdown]\ngrace_secs = 1\n",
            node = q(node),
            token = q(TOKEN),
        );
        let config = CollectorConfig::from_toml_with_env(&toml, "test", Vec::new(), &overrides)
            .expect("valid collector config");
        let running = RunningCollector::start(&config)
            .await
            .expect("the collector starts");
        Lab {
            dir,
            node: node.to_owned(),
            tls,
            running: Some(running),
        }
    }

    fn running(&self) -> &RunningCollector {
        self.running.as_ref().expect("the collector runs")
    }

    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// The export listener's base URL.
    pub fn export_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.running().export_addr)
    }

    /// The export listener's address.
    pub fn export_addr(&self) -> SocketAddr {
        self.running().export_addr
    }

    /// The generated certificate.
    pub fn cert_file(&self) -> PathBuf {
        self.dir.path().join("tls/cert.pem")
    }

    /// A `[[collector]]` table for this collector named `name`.
    pub fn collector_toml(&self, name: &str, extra: &str) -> String {
        let ca = self.tls.then(|| self.cert_file());
        collector_toml(name, &self.export_url(), ca.as_deref(), extra)
    }

    /// The staging store.
    pub fn staging(&self) -> &Staging {
        &self.running().staging
    }

    /// Staging figures (what the collector considers acknowledged).
    pub async fn stats(&self) -> StagingStats {
        self.staging().stats().await.unwrap()
    }

    /// Posts the demo cases to the public listener over HTTP(S), each with
    /// its subscriber's egress in `X-Forwarded-For`, as the demo does.
    pub async fn post_cases(&self, cases: &[DemoCase]) {
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
        let public = format!("{}://{}", self.scheme(), self.running().public_addr);
        for (i, case) in cases.iter().enumerate() {
            let path = ["/api/v1/report", "/api/v1/cn/report", "/static/a1/upload"][i % 3];
            let mut request = client
                .post(format!("{public}{path}"))
                .header("content-type", "application/json")
                .header("user-agent", "lineprobe-agent/0.1.0")
                .body(case.report.to_json().unwrap());
            if let Some(egress) = case.egress {
                request = request.header("x-forwarded-for", egress.to_string());
            }
            let response = request.send().await.unwrap();
            assert!(
                response.status().is_success(),
                "the collector refused {}: {}",
                case.label,
                response.status()
            );
        }
    }

    /// Stops the collector (graceful; the staging store is closed).
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.unwrap();
        }
    }
}

/// A `[[collector]]` table: plain HTTP URLs get `allow_plain_http`, HTTPS
/// ones `ca_file`; `extra` is appended (`batch = 50`…).
pub fn collector_toml(name: &str, url: &str, ca_file: Option<&Path>, extra: &str) -> String {
    let trust = match ca_file {
        Some(ca) => format!("ca_file = {}", qp(ca)),
        None => "allow_plain_http = true".to_owned(),
    };
    format!(
        "\n[[collector]]\nname = {}\nurl = {}\ntoken_env = {}\n{trust}\n{extra}\n",
        q(name),
        q(url),
        q(TOKEN_ENV)
    )
}

/// The demo's three address sources over the files in `config/demo/`, the
/// China Mobile plan read from `plan` instead, all with data `version`.
pub fn demo_sources_toml(plan: &Path, version: &str) -> String {
    let demo = demo_data_dir();
    format!(
        "\n[[resolve.source]]\nkind = \"ipplan\"\nname = \"cmcc-plan\"\npath = {}\nversion = {v}\n\
         \n[[resolve.source]]\nkind = \"ipplan\"\nname = \"regions\"\npath = {}\nversion = {v}\n\
         \n[[resolve.source]]\nkind = \"ranges\"\nname = \"asn-ranges\"\npath = {}\nversion = {v}\n",
        qp(plan),
        qp(&demo.join("regions.csv")),
        qp(&demo.join("asn-ranges.csv")),
        v = q(version),
    )
}

/// Reports in the shape the demo's first case has (a China Mobile line in
/// Shenzhen), each with a fresh report id and a receiver envelope, spread
/// over `lines` installations so that the pipeline de-duplicates.
pub fn bulk_reports(n: usize, lines: usize, tag: &str) -> Vec<Report> {
    let now = chrono::Utc::now();
    let cases = lineprobe_sync::demo_cases(now.fixed_offset()).unwrap();
    let mut template = serde_json::to_value(&cases[0].report).unwrap();
    template["envelope"] = json!({
        "received_at": now.to_rfc3339(),
        "peer_ip": "120.229.16.77",
        "path": "/api/v1/report",
        "headers": {},
        "node_id": "placeholder",
        "seq": 0,
    });
    // Validated once; the copies differ only in fields set from valid values.
    let template = Report::from_json(&serde_json::to_vec(&template).unwrap()).unwrap();
    (0..n)
        .map(|i| {
            let line = i % lines.max(1);
            let mut report = template.clone();
            report.report_id = ReportId::new_v7();
            report.install_id = InstallId::parse(&format!("{tag}-{line:05}")).unwrap();
            report.account = format!("0755{line:08}");
            report
        })
        .collect()
}

/// Stages `reports` into `staging` from many tasks at once (the store
/// commits them in groups); returns their ids.
pub async fn stage_all(staging: &Staging, reports: Vec<Report>) -> Vec<String> {
    let ids: Vec<String> = reports.iter().map(|r| r.report_id.to_string()).collect();
    let queue = Arc::new(Mutex::new(reports));
    let mut tasks = Vec::new();
    // As many at once as the store commits together (its group_commit_max).
    for _ in 0..512 {
        let queue = Arc::clone(&queue);
        let staging = staging.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().unwrap().pop();
                let Some(report) = next else { break };
                staging.stage(report).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    ids
}

/// Stages reports into the store file of a collector that is not running
/// (the collector binary opens it afterwards).
pub async fn prefill_staging(data_dir: &Path, node: &str, reports: Vec<Report>) -> Vec<String> {
    let options = StagingOptions::from_config(
        data_dir.join("staging.sqlite3"),
        node.to_owned(),
        &StagingConfig::default(),
    );
    let staging = Staging::open(options).unwrap();
    let ids = stage_all(&staging, reports).await;
    staging.close().await.unwrap();
    ids
}

/// Opens a stopped collector's store and returns its figures.
pub async fn staging_stats_of(data_dir: &Path, node: &str) -> StagingStats {
    let options = StagingOptions::from_config(
        data_dir.join("staging.sqlite3"),
        node.to_owned(),
        &StagingConfig::default(),
    );
    let staging = Staging::open(options).unwrap();
    let stats = staging.stats().await.unwrap();
    staging.close().await.unwrap();
    stats
}

/// The collector binary, built into this test's target folder when needed
/// (as the agent lab finds its binaries).
pub fn collector_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("the test binary's path");
            // <target>/<profile>/deps/<test>-<hash>
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("the profile directory")
                .to_path_buf();
            let binary = profile_dir.join("lineprobe-collector");
            let mut cargo = Command::new(env!("CARGO"));
            cargo
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "lineprobe-collector",
                    "--bin",
                    "lineprobe-collector",
                ])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            if let Some(target_dir) = profile_dir.parent() {
                cargo.env("CARGO_TARGET_DIR", target_dir);
            }
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cargo.arg("--release");
            }
            let mut child = cargo.spawn().expect("run cargo build");
            let started = Instant::now();
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                if started.elapsed() > Duration::from_mins(10) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            if status.is_none_or(|s| !s.success()) {
                eprintln!(
                    "building lineprobe-collector failed ({status:?}); using {}",
                    binary.display()
                );
            }
            assert!(
                binary.is_file(),
                "{} is missing: run `cargo build -p lineprobe-collector`",
                binary.display()
            );
            binary
        })
        .clone()
}

/// The collector binary running as a process of its own, plain HTTP on
/// loopback; killed when dropped.
pub struct CollectorProc {
    pub proc: Proc,
    pub export: SocketAddr,
}

impl CollectorProc {
    /// Starts `lineprobe-collector serve` on `data_dir` as node `node`,
    /// its export listener on `export` (port 0: any), `max_batch` reports
    /// per page.
    pub async fn start(
        binary: &Path,
        data_dir: &Path,
        node: &str,
        export: SocketAddr,
        max_batch: usize,
        logs: &Path,
    ) -> CollectorProc {
        let mut command = Command::new(binary);
        command
            .args(["serve", "--plain-http", "--listen", "127.0.0.1:0"])
            .arg("--export-listen")
            .arg(export.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .env("LINEPROBE_EXPORT_TOKEN", TOKEN)
            .env("LINEPROBE_COLLECTOR__NODE_ID", node)
            .env(
                "LINEPROBE_COLLECTOR__EXPORT__MAX_BATCH",
                max_batch.to_string(),
            )
            .env("LINEPROBE_COLLECTOR__SHUTDOWN__GRACE_SECS", "1")
            .env("RUST_LOG", "warn");
        let proc = Proc::spawn(command, logs, &format!("collector-{node}"));
        // "lineprobe-collector: public http://A export http://B"
        let stdout = proc.stdout.clone();
        let started = Instant::now();
        let line = loop {
            let text = read_lossy(&stdout);
            if let Some(line) = text.lines().next().filter(|_| text.contains('\n')) {
                break line.to_owned();
            }
            assert!(
                started.elapsed() < Duration::from_mins(1),
                "the collector binary printed no address line; stderr:\n{}",
                proc.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let export = line
            .split_whitespace()
            .nth(4)
            .and_then(|u| u.strip_prefix("http://"))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        CollectorProc { proc, export }
    }

    /// The export base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.export)
    }
}

// --- a proxy that loses acknowledgements ------------------------------------

/// What the proxy does to `POST /export/ack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckFault {
    /// Forward it.
    Pass,
    /// Close the connection without forwarding: the ack never lands.
    DropRequest,
    /// Forward it, wait for the collector's answer, then close the
    /// connection without passing the answer on: the ack lands, but the
    /// puller cannot know.
    DropAnswer,
}

/// A plain-HTTP proxy on loopback in front of an export API. Each client
/// connection carries one request (the proxy asks both sides to close);
/// `POST /export/ack` meets the configured fault, and every other page
/// answer can be cut off halfway.
pub struct FaultProxy {
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
    task: JoinHandle<()>,
}

struct ProxyState {
    upstream: SocketAddr,
    ack_fault: Mutex<AckFault>,
    cut_pages: AtomicBool,
    down: AtomicBool,
    pages: AtomicUsize,
    pages_cut: AtomicUsize,
    acks: AtomicUsize,
    acks_lost: AtomicUsize,
}

impl FaultProxy {
    /// A proxy to `upstream`, passing everything until told otherwise.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            upstream,
            ack_fault: Mutex::new(AckFault::Pass),
            cut_pages: AtomicBool::new(false),
            down: AtomicBool::new(false),
            pages: AtomicUsize::new(0),
            pages_cut: AtomicUsize::new(0),
            acks: AtomicUsize::new(0),
            acks_lost: AtomicUsize::new(0),
        });
        let task = tokio::spawn({
            let state = Arc::clone(&state);
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    let state = Arc::clone(&state);
                    tokio::spawn(async move {
                        let _ = proxy_one(client, &state).await;
                    });
                }
            }
        });
        FaultProxy { addr, state, task }
    }

    /// The proxy's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets what happens to acknowledgements.
    pub fn set_ack_fault(&self, fault: AckFault) {
        *self.state.ack_fault.lock().unwrap() = fault;
    }

    /// Cut every second page answer off halfway (or stop doing so).
    pub fn set_cut_pages(&self, cut: bool) {
        self.state.cut_pages.store(cut, Ordering::SeqCst);
    }

    /// Close every connection at once, as a collector that is down does
    /// (or stop doing so).
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// (pages seen, pages cut, acks seen, acks lost).
    pub fn counters(&self) -> (usize, usize, usize, usize) {
        (
            self.state.pages.load(Ordering::SeqCst),
            self.state.pages_cut.load(Ordering::SeqCst),
            self.state.acks.load(Ordering::SeqCst),
            self.state.acks_lost.load(Ordering::SeqCst),
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads an HTTP head (up to the blank line); returns it and any bytes
/// read past it.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0_u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        if buf.len() > 64 * 1024 {
            return Err(std::io::Error::other("head too large"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The head with any `Connection` header replaced by `Connection: close`.
fn closing(head: &str) -> String {
    let mut out = String::new();
    for line in head.trim_end_matches("\r\n").split("\r\n") {
        if line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("connection: close\r\n\r\n");
    out
}

fn content_length(head: &str) -> usize {
    head.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn proxy_one(mut client: TcpStream, state: &ProxyState) -> std::io::Result<()> {
    if state.down.load(Ordering::SeqCst) {
        return Ok(());
    }
    let (head, mut body) = read_head(&mut client).await?;
    let want = content_length(&head);
    while body.len() < want {
        let mut chunk = vec![0_u8; want - body.len()];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let request_line = head.lines().next().unwrap_or_default().to_owned();
    let is_ack = request_line.starts_with("POST /export/ack");
    let is_page = request_line.starts_with("GET /export?") || request_line == "GET /export";
    let fault = *state.ack_fault.lock().unwrap();
    let cut = is_page
        && state.cut_pages.load(Ordering::SeqCst)
        && state.pages.load(Ordering::SeqCst) % 2 == 1;
    if is_page {
        state.pages.fetch_add(1, Ordering::SeqCst);
    }
    if is_ack {
        state.acks.fetch_add(1, Ordering::SeqCst);
        if fault == AckFault::DropRequest {
            state.acks_lost.fetch_add(1, Ordering::SeqCst);
            // Dropping `client` closes the connection: no answer at all.
            return Ok(());
        }
    }
    let mut upstream = TcpStream::connect(state.upstream).await?;
    upstream.write_all(closing(&head).as_bytes()).await?;
    upstream.write_all(&body).await?;
    let (answer_head, mut rest) = read_head(&mut upstream).await?;
    if is_ack && fault == AckFault::DropAnswer {
        // The collector has answered, so the ack is committed there.
        state.acks_lost.fetch_add(1, Ordering::SeqCst);
        return Ok(());
    }
    client.write_all(closing(&answer_head).as_bytes()).await?;
    if cut {
        // The whole answer (the collector closes after it), then half of it:
        // a page broken off mid-body, chunked or not.
        upstream.read_to_end(&mut rest).await?;
        if rest.len() > 16 {
            client.write_all(&rest[..rest.len() / 2]).await?;
            state.pages_cut.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
    }
    client.write_all(&rest).await?;
    tokio::io::copy(&mut upstream, &mut client).await?;
    client.shutdown().await?;
    Ok(())
}

// --- misc -------------------------------------------------------------------

/// A loopback address nobody listens on, which a test may bind again later
/// (see `ports`).
pub fn unused_addr() -> SocketAddr {
    ports::unused_loopback_addr()
}

/// A listener that accepts connections and never answers: a collector that
/// hangs. Its connections are kept open until the returned task is aborted.
pub async fn black_hole() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    (addr, task)
}
