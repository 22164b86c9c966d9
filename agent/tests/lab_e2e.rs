//! The whole line in the network lab: the real `lineprobe-collector serve`
//! runs in the receiver's namespace, the real `lineprobe-agent` probes from
//! the subscriber's, through the home NAT and the carrier's CGNAT.
//!
//! The stored report must carry the CGN's public address as its peer and the
//! lab's hops as its trace — when the first endpoint is dead, and after the
//! collector was down (the spool delivers the report once, later, with its
//! original id) — as root (trippy-core) and as `nobody` (unprivileged); and
//! from the agent built for Windows, under Wine, when `.ci/run` names it
//! (`LINEPROBE_WINDOWS_AGENT`; the test says it skips otherwise).
#![cfg(target_os = "linux")]

mod lab;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use lab::{Lab, NOBODY, run_bounded};
use lineprobe_collector::{Staging, StagingConfig, StagingOptions};
use lineprobe_shared::{AttemptOutcome, Classifier, ClassifierConfig, Report, TraceEngine};

/// The collector's node id, also what its staging store is opened with.
const NODE_ID: &str = "lab-node";
const EXPORT_TOKEN: &str = "lab-export-token-0123456789abcdef";
/// Most any one agent command may take (a trace, then a submission that may
/// wait out a dead endpoint's connect timeout).
const AGENT_LIMIT: Duration = Duration::from_mins(1);
/// Most the collector may take to print its addresses, or to stop on SIGTERM.
const COLLECTOR_LIMIT: Duration = Duration::from_secs(20);

// ─────────────────────────────── binaries ───────────────────────────────

fn agent_binary() -> &'static str {
    env!("CARGO_BIN_EXE_lineprobe-agent")
}

/// `lineprobe-collector`, built (or found up to date) in this test's target
/// directory: cargo builds only the binaries of the package under test.
fn collector_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            lab::workspace_binary("lineprobe-collector", "--bin", "lineprobe-collector")
        })
        .clone()
}

// ─────────────────────────────── processes ──────────────────────────────

/// A process the test started; killed when dropped, also on panic.
#[derive(Debug)]
struct Process {
    child: Child,
    what: String,
}

impl Process {
    /// Sends SIGTERM and waits (bounded) for a clean exit.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let out = run_bounded(lab::command("kill", &["-TERM", &pid]), COLLECTOR_LIMIT)
            .unwrap_or_else(|e| panic!("SIGTERM to {}: {e}", self.what));
        assert!(
            out.status.success(),
            "kill -TERM {pid} ({}) failed",
            self.what
        );
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                started.elapsed() < COLLECTOR_LIMIT,
                "{} did not stop within {COLLECTOR_LIMIT:?} of SIGTERM",
                self.what
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `pipe` on a thread until it closes: the first line goes to
/// `first_line`, the rest is discarded so that the process never blocks on
/// a full pipe.
fn drain(pipe: impl Read + Send + 'static, first_line: mpsc::Sender<String>) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = first_line.send(line);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
}

// ─────────────────────────────── collector ──────────────────────────────

/// Where a lab collector keeps its data, config and log, across restarts.
#[derive(Debug)]
struct CollectorSite {
    data_dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
}

/// A `lineprobe-collector serve` running in `recv`.
#[derive(Debug)]
struct RunningCollector {
    process: Process,
    /// The export listener, on `recv`'s own loopback.
    export: SocketAddr,
}

impl CollectorSite {
    fn new(lab: &Lab, root: &Path) -> Self {
        let data_dir = root.join("collector");
        fs::create_dir(&data_dir).expect("collector data dir");
        let config = root.join("collector.toml");
        // The agent verifies the generated certificate by the receiver's
        // address; the export client by recv's loopback.
        fs::write(
            &config,
            format!(
                "node_id = \"{NODE_ID}\"\n[tls]\nself_signed_names = [\"{}\", \"127.0.0.1\"]\n",
                lab.addr("recv")
            ),
        )
        .expect("collector config");
        Self {
            data_dir,
            config,
            log: root.join("collector.log"),
        }
    }

    /// The public listener the agent posts to.
    fn public_url(lab: &Lab) -> String {
        format!("https://{}:{}", lab.addr("recv"), Lab::RECV_TCP_PORT)
    }

    /// The certificate the collector generated on its first start.
    fn cert(&self) -> PathBuf {
        self.data_dir.join("tls/cert.pem")
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts `lineprobe-collector serve` in `recv` and waits (bounded) for
    /// the line with its addresses.
    fn start(&self, lab: &Lab) -> RunningCollector {
        let binary = collector_binary();
        let listen = SocketAddr::new(lab.addr("recv"), Lab::RECV_TCP_PORT).to_string();
        let mut cmd = lab.exec(
            "recv",
            &[
                binary.to_str().expect("a UTF-8 path"),
                "serve",
                "--config",
                self.config.to_str().expect("a UTF-8 path"),
                "--listen",
                &listen,
                "--export-listen",
                "127.0.0.1:0",
                "--data-dir",
                self.data_dir.to_str().expect("a UTF-8 path"),
            ],
        );
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("collector log");
        cmd.env("LINEPROBE_EXPORT_TOKEN", EXPORT_TOKEN)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = cmd.spawn().expect("start lineprobe-collector");
        let stdout = child.stdout.take().expect("stdout");
        let process = Process {
            child,
            what: "lineprobe-collector".to_owned(),
        };
        let (tx, rx) = mpsc::channel();
        drain(stdout, tx);
        let line = rx.recv_timeout(COLLECTOR_LIMIT).unwrap_or_else(|e| {
            panic!(
                "lineprobe-collector printed no address line ({e}); its log:\n{}",
                self.log_text()
            )
        });
        // "lineprobe-collector: public https://ADDR export https://ADDR"
        let words: Vec<&str> = line.split_whitespace().collect();
        let addr = |i: usize| -> SocketAddr {
            words
                .get(i)
                .and_then(|w| w.strip_prefix("https://"))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| {
                    panic!(
                        "unexpected first line {line:?}; the collector's log:\n{}",
                        self.log_text()
                    )
                })
        };
        assert_eq!(addr(2).to_string(), listen, "{line}");
        RunningCollector {
            export: addr(4),
            process,
        }
    }

    /// Every report in the staging store, read directly (the collector must
    /// be stopped), after an integrity check.
    fn stored(&self) -> Vec<Report> {
        let options = StagingOptions::from_config(
            self.data_dir.join("staging.sqlite3"),
            NODE_ID.to_owned(),
            &StagingConfig::default(),
        );
        runtime().block_on(async {
            let staging = Staging::open(options).expect("the staging store opens");
            staging.integrity_check().await.expect("integrity check");
            let mut reports = Vec::new();
            let mut after = 0;
            loop {
                let batch = staging.export_after(after, 1000).await.expect("export");
                let Some(last) = batch.last() else { break };
                after = last.seq;
                for r in &batch {
                    reports.push(Report::from_stored_json(&r.json).expect("a stored report"));
                }
            }
            staging.close().await.expect("close");
            reports
        })
    }
}

impl RunningCollector {
    /// Stops the collector with SIGTERM; it must exit cleanly.
    fn stop(self, site: &CollectorSite) {
        let status = self.process.stop();
        assert!(
            status.success(),
            "lineprobe-collector exited with {status}; its log:\n{}",
            site.log_text()
        );
    }

    /// Pulls every report through the export API with the token, as the
    /// internal side does: from inside `recv`, whose loopback it listens on.
    /// Needs [`Lab::open_recv_loopback`].
    fn export(&self, lab: &Lab, site: &CollectorSite) -> Vec<Report> {
        let pem = fs::read(site.cert()).expect("the generated certificate");
        let url = format!("https://{}/export?after=0&limit=1000", self.export);
        let body = lab.in_netns("recv", || {
            runtime().block_on(async {
                let client = reqwest::Client::builder()
                    .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("PEM"))
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("client");
                let response = client
                    .get(&url)
                    .header("authorization", format!("Bearer {EXPORT_TOKEN}"))
                    .send()
                    .await
                    .expect("export request");
                assert_eq!(response.status(), reqwest::StatusCode::OK);
                response.text().await.expect("export body")
            })
        });
        body.lines()
            .map(|l| Report::from_stored_json(l.as_bytes()).expect("an exported report"))
            .collect()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

// ───────────────────────────────── agent ────────────────────────────────

/// How an agent runs in `sub`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum User {
    Root,
    /// `nobody` without any capability.
    Nobody,
    /// The agent built for Windows (this file), under Wine as root, in a
    /// Wine prefix of the install's own (its Wine server starts in `sub`).
    Windows(PathBuf),
}

/// One agent install in `sub`: its config and state folder.
#[derive(Debug)]
struct AgentSite<'a> {
    lab: &'a Lab,
    user: User,
    config: PathBuf,
    state: PathBuf,
    /// The Wine prefix of a Windows install.
    wine_prefix: PathBuf,
}

impl<'a> AgentSite<'a> {
    /// An install under `root/name` posting to `endpoints` in order and
    /// trusting the collector certificate `ca`.
    fn new(
        lab: &'a Lab,
        root: &Path,
        name: &str,
        user: User,
        endpoints: &[String],
        ca: &Path,
    ) -> Self {
        let dir = root.join(name);
        fs::create_dir(&dir).expect("agent dir");
        // `nobody` must read the config and CA, and own its state folder.
        let ca_copy = dir.join("collector-ca.pem");
        fs::copy(ca, &ca_copy).expect("copy the collector certificate");
        let ca_path = match user {
            User::Windows(_) => lab::wine_path(&ca_copy),
            User::Root | User::Nobody => ca_copy.display().to_string(),
        };
        let urls = endpoints
            .iter()
            .map(|e| format!("{e:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = dir.join("agent.toml");
        fs::write(
            &config,
            format!(
                "[endpoints]\nurls = [{urls}]\nconnect_timeout_secs = 2\nrequest_timeout_secs = 10\n\
                 ca_file = {ca_path:?}\n\
                 [schedule]\ninterval_secs = 3600\njitter_secs = 0\nretry_base_secs = 1\n\
                 retry_max_secs = 2\n\
                 [trace]\nrounds = 1\ndeadline_secs = 20\n\
                 [declared]\nprovince = \"广东\"\ncity = \"深圳\"\ncarrier = \"中国电信\"\n\
                 account = \"07550001111\"\naddress = \"南山区实验路 1 号\"\n",
            ),
        )
        .expect("agent config");
        let state = dir.join("state");
        fs::create_dir(&state).expect("state dir");
        if user == User::Nobody {
            std::os::unix::fs::chown(&state, Some(NOBODY), Some(NOBODY)).expect("chown state");
        }
        Self {
            lab,
            user,
            config,
            state,
            wine_prefix: dir.join("wine"),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let (state, config) = match self.user {
            User::Windows(_) => (lab::wine_path(&self.state), lab::wine_path(&self.config)),
            User::Root | User::Nobody => (
                self.state.display().to_string(),
                self.config.display().to_string(),
            ),
        };
        let with = |program: &[&str]| -> Vec<String> {
            program
                .iter()
                .copied()
                .chain(["--state-dir", &state, "--config", &config])
                .chain(args.iter().copied())
                .map(str::to_owned)
                .collect()
        };
        match &self.user {
            User::Root => self.lab.exec("sub", &refs(&with(&[agent_binary()]))),
            User::Nobody => self
                .lab
                .exec_unprivileged("sub", &refs(&with(&[agent_binary()]))),
            User::Windows(exe) => {
                let runner = lab::wine_runner();
                let program = [
                    runner.to_str().expect("a UTF-8 path"),
                    exe.to_str().expect("a UTF-8 path"),
                ];
                let mut cmd = self.lab.exec("sub", &refs(&with(&program)));
                cmd.env("WINEPREFIX", &self.wine_prefix);
                cmd
            }
        }
    }

    /// Runs `lineprobe-agent <args>` to completion (bounded); it must succeed.
    /// Returns its standard output.
    fn run(&self, args: &[&str]) -> String {
        let out = self.run_raw(args);
        assert!(
            out.status.success(),
            "lineprobe-agent {args:?} as {:?} failed ({}):\n{}{}",
            self.user,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn run_raw(&self, args: &[&str]) -> Output {
        run_bounded(self.command(args), AGENT_LIMIT)
            .unwrap_or_else(|e| panic!("lineprobe-agent {args:?}: {e}"))
    }

    /// `consent --accept`.
    fn accept_consent(&self) {
        let out = self.run(&["consent", "--accept"]);
        assert!(out.starts_with("consent recorded"), "{out}");
    }

    /// `probe`: the report id and whether it was stored (else spooled).
    fn probe(&self) -> (String, bool) {
        let out = self.run(&["probe"]);
        // "report ID stored by URL" or "report ID spooled: …"
        let words: Vec<&str> = out.split_whitespace().collect();
        match words.as_slice() {
            ["report", id, "stored", "by", ..] => ((*id).to_owned(), true),
            ["report", id, "spooled:", ..] => ((*id).to_owned(), false),
            _ => panic!("unexpected probe output: {out}"),
        }
    }

    fn status(&self) -> String {
        self.run(&["status"])
    }

    /// Starts `lineprobe-agent run` (the daemon) in the background.
    fn spawn_daemon(&self) -> (Process, mpsc::Receiver<String>) {
        let mut cmd = self.command(&["run"]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("start lineprobe-agent run");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        drain(stdout, tx);
        (
            Process {
                child,
                what: "lineprobe-agent run".to_owned(),
            },
            rx,
        )
    }
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

// ──────────────────────────────── checks ────────────────────────────────

/// `(ttl, address)` of every answer in the trace.
fn responding(report: &Report) -> Vec<(u8, IpAddr)> {
    report
        .trace
        .hops
        .iter()
        .flat_map(|h| h.addrs.iter().map(move |a| (h.ttl, *a)))
        .collect()
}

/// What a report from `sub` must show whoever made it: the CGN's public
/// address as peer, the lab's hops up to r3 and nothing beyond (the receiver
/// answers nothing), r1 as the first public hop, the declared line.
fn check_line(lab: &Lab, report: &Report, engine: &TraceEngine) {
    let id = report.report_id;
    let envelope = report
        .envelope
        .as_ref()
        .expect("a stored report has an envelope");
    assert_eq!(
        envelope.peer_ip,
        lab.cgn_public_addr(),
        "report {id}: the receiver saw another address than the CGN's public one"
    );
    assert_eq!(envelope.node_id, NODE_ID);
    let trace = &report.trace;
    assert_eq!(
        &trace.engine, engine,
        "report {id}: {:?}",
        trace.engine_fallbacks
    );
    assert_eq!(trace.target_addr, Some(lab.addr("recv")), "report {id}");
    let expected: Vec<(u8, IpAddr)> = lab
        .expected_hops(false)
        .into_iter()
        .zip(1_u8..)
        .filter_map(|(addr, ttl)| addr.map(|a| (ttl, a)))
        .collect();
    assert_eq!(
        responding(report),
        expected,
        "report {id}: hops {:#?}",
        trace.hops
    );
    // Every TTL up to r3's is listed, r2's silent one included, and the
    // receiver's (TTL 6) too: the trace went past r3 and found nothing.
    let ttls: Vec<u8> = trace.hops.iter().map(|h| h.ttl).take(6).collect();
    assert_eq!(ttls, [1, 2, 3, 4, 5, 6], "report {id}: {:#?}", trace.hops);
    let classifier = Classifier::new(&ClassifierConfig {
        extra_public: lab.public_cidrs(),
    })
    .expect("the lab's public CIDRs are valid");
    let analysis = classifier.first_public_hop(&trace.hops, trace.target_addr);
    assert_eq!(
        analysis.first_public_addr(),
        Some((3, lab.addr("r1"))),
        "report {id}: the first public hop is r1"
    );
    assert!(analysis.cgnat_seen, "report {id}: the CGN's shared address");
    assert_eq!(report.declared.province.as_deref(), Some("CN-GD"));
    assert_eq!(report.declared.city.as_deref(), Some("440300"));
    assert_eq!(report.declared.carrier.as_deref(), Some("china_telecom"));
    assert_eq!(report.account, "07550001111");
}

/// Reports by id; every id must be there exactly once.
fn by_id(reports: &[Report]) -> HashMap<String, &Report> {
    let mut map = HashMap::new();
    for r in reports {
        let id = r.report_id.to_string();
        assert!(
            map.insert(id.clone(), r).is_none(),
            "report {id} is stored more than once"
        );
    }
    map
}

fn work_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    // `nobody` must reach its own folder inside.
    fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    dir
}

// ───────────────────────────────── tests ────────────────────────────────

#[test]
fn lab_probe_reports_the_public_nat_address_and_the_labs_hops() {
    let test = "lab_probe_reports_the_public_nat_address_and_the_labs_hops";
    let Some(lab) = Lab::start_or_skip(test) else {
        return;
    };
    let work = work_dir();
    let site = CollectorSite::new(&lab, work.path());
    let collector = site.start(&lab);
    lab.open_recv_loopback();
    let live = CollectorSite::public_url(&lab);

    // As root: trippy-core.
    let root = AgentSite::new(
        &lab,
        work.path(),
        "root",
        User::Root,
        std::slice::from_ref(&live),
        &site.cert(),
    );
    root.accept_consent();
    let (root_id, stored) = root.probe();
    assert!(stored, "not stored; status:\n{}", root.status());

    // As nobody without capabilities: auto falls back to unprivileged.
    let nobody = AgentSite::new(
        &lab,
        work.path(),
        "nobody",
        User::Nobody,
        &[live],
        &site.cert(),
    );
    nobody.accept_consent();
    let (nobody_id, stored) = nobody.probe();
    assert!(stored, "not stored; status:\n{}", nobody.status());

    // What the internal side pulls.
    let reports = collector.export(&lab, &site);
    assert_eq!(reports.len(), 2, "{reports:#?}");
    let reports = by_id(&reports);
    let r = reports[&root_id];
    check_line(&lab, r, &TraceEngine::TrippyCore);
    assert!(
        r.trace.engine_fallbacks.is_empty(),
        "{:?}",
        r.trace.engine_fallbacks
    );
    assert!(r.endpoint_attempts.is_empty(), "{:?}", r.endpoint_attempts);

    let n = reports[&nobody_id];
    check_line(&lab, n, &TraceEngine::Unprivileged);
    assert_eq!(
        n.trace.engine_fallbacks.first().map(|f| &f.engine),
        Some(&TraceEngine::TrippyCore),
        "{:?}",
        n.trace.engine_fallbacks
    );
    assert_ne!(n.install_id, r.install_id);
    collector.stop(&site);
}

#[test]
fn lab_windows_probe_reports_the_public_nat_address_and_the_labs_hops() {
    let test = "lab_windows_probe_reports_the_public_nat_address_and_the_labs_hops";
    let Some(exe) = lab::windows_agent_or_skip(test) else {
        return;
    };
    let Some(lab) = Lab::start_or_skip(test) else {
        return;
    };
    let work = work_dir();
    let site = CollectorSite::new(&lab, work.path());
    let collector = site.start(&lab);
    lab.open_recv_loopback();
    let live = CollectorSite::public_url(&lab);

    // The agent built for Windows, under Wine: its facts, its engines, its
    // HTTPS to the collector.
    let windows = AgentSite::new(
        &lab,
        work.path(),
        "windows",
        User::Windows(exe),
        &[live],
        &site.cert(),
    );
    windows.accept_consent();
    let (id, stored) = windows.probe();
    assert!(stored, "not stored; status:\n{}", windows.status());

    let reports = collector.export(&lab, &site);
    assert_eq!(reports.len(), 1, "{reports:#?}");
    let r = by_id(&reports)[&id];
    // Wine runs as root: trippy-core has its raw sockets, as under an
    // Administrator.
    check_line(&lab, r, &TraceEngine::TrippyCore);
    assert_eq!(r.device.os, "windows", "{:?}", r.device);
    assert!(
        r.device.local_addrs.contains(&lab.addr("sub")),
        "the Windows interface list shows the LAN address: {:?}",
        r.device.local_addrs
    );
    collector.stop(&site);
}

#[test]
fn lab_probe_falls_back_past_dead_first_endpoints() {
    let test = "lab_probe_falls_back_past_dead_first_endpoints";
    let Some(lab) = Lab::start_or_skip(test) else {
        return;
    };
    let work = work_dir();
    let site = CollectorSite::new(&lab, work.path());
    let collector = site.start(&lab);
    let live = CollectorSite::public_url(&lab);
    // Another port on the receiver: its firewall drops the SYN, so the
    // agent waits out its connect timeout, like a blocked collector. Then a
    // port on r3, which nothing listens on: refused at once.
    let dropped = format!("https://{}:{}", lab.addr("recv"), Lab::RECV_TCP_PORT + 1);
    let refused = format!("https://{}:{}", lab.addr("r3"), Lab::RECV_TCP_PORT);
    let agent = AgentSite::new(
        &lab,
        work.path(),
        "root",
        User::Root,
        &[dropped.clone(), refused.clone(), live.clone()],
        &site.cert(),
    );
    agent.accept_consent();
    let (id, stored) = agent.probe();
    assert!(stored, "not stored; status:\n{}", agent.status());
    let status = agent.status();
    for (endpoint, outcome) in [(&dropped, "timeout"), (&refused, "connect"), (&live, "ok")] {
        assert!(
            status.contains(&format!("{endpoint} {outcome}")),
            "{endpoint} should be `{outcome}`:\n{status}"
        );
    }
    collector.stop(&site);

    let reports = site.stored();
    assert_eq!(reports.len(), 1, "{reports:#?}");
    let r = &reports[0];
    assert_eq!(r.report_id.to_string(), id);
    check_line(&lab, r, &TraceEngine::TrippyCore);
    let attempts: Vec<(&str, AttemptOutcome)> = r
        .endpoint_attempts
        .iter()
        .map(|a| (a.endpoint.as_str(), a.outcome))
        .collect();
    assert_eq!(
        attempts,
        [
            (dropped.as_str(), AttemptOutcome::Timeout),
            (refused.as_str(), AttemptOutcome::Connect)
        ],
        "{:#?}",
        r.endpoint_attempts
    );
}

#[test]
fn lab_spooled_report_is_delivered_once_after_the_collector_was_down() {
    let test = "lab_spooled_report_is_delivered_once_after_the_collector_was_down";
    let Some(lab) = Lab::start_or_skip(test) else {
        return;
    };
    let work = work_dir();
    let site = CollectorSite::new(&lab, work.path());
    let collector = site.start(&lab);
    let live = CollectorSite::public_url(&lab);
    let agent = AgentSite::new(
        &lab,
        work.path(),
        "root",
        User::Root,
        std::slice::from_ref(&live),
        &site.cert(),
    );
    agent.accept_consent();
    let (before, stored) = agent.probe();
    assert!(stored, "not stored; status:\n{}", agent.status());

    // The collector goes down: the next report waits in the spool.
    collector.stop(&site);
    let (spooled, stored) = agent.probe();
    assert!(!stored, "stored with the collector down?");
    let status = agent.status();
    assert!(status.contains("spool: 1 report(s) waiting"), "{status}");
    assert!(status.contains(&format!("{live} connect")), "{status}");

    // Back up on the same data: the daemon probes and drains the spool.
    let collector = site.start(&lab);
    let (daemon, daemon_out) = agent.spawn_daemon();
    let started = Instant::now();
    loop {
        let status = agent.status();
        if status.contains("spool: 0 report(s) waiting") && status.contains(&format!("{live} ok")) {
            break;
        }
        assert!(
            started.elapsed() < AGENT_LIMIT,
            "the spool was not drained within {AGENT_LIMIT:?}:\n{status}\ncollector log:\n{}",
            site.log_text()
        );
        thread::sleep(Duration::from_millis(200));
    }
    let exit = daemon.stop();
    assert!(exit.success(), "lineprobe-agent run exited with {exit}");
    let said = daemon_out
        .recv_timeout(AGENT_LIMIT)
        .expect("the daemon's output");
    assert_eq!(said.trim(), "stopped");
    collector.stop(&site);

    let reports = site.stored();
    assert_eq!(reports.len(), 3, "{reports:#?}");
    let reports = by_id(&reports);
    for id in [&before, &spooled] {
        assert!(
            reports.contains_key(id),
            "report {id} missing: {:?}",
            reports.keys()
        );
    }
    for r in reports.values() {
        check_line(&lab, r, &TraceEngine::TrippyCore);
    }
    // The spooled one kept its id and tells of the outage it waited out.
    let r = reports[&spooled];
    assert!(
        r.endpoint_attempts
            .iter()
            .any(|a| a.endpoint == live && a.outcome == AttemptOutcome::Connect),
        "{:?}",
        r.endpoint_attempts
    );
    assert!(reports[&before].endpoint_attempts.is_empty());
}
