//! The internal side end to end, through the real `lineprobe-sync` binary:
//! the example configuration, configuration errors, a one-way pull from a
//! real collector on loopback holding the demo's reports, the listings
//! (`verdicts`, `quarantine`, `status`), the daemon, and reprocessing after
//! the IP data changed. Every scenario runs on SQLite and, when
//! `LINEPROBE_TEST_PG` names a server, on a fresh PostgreSQL database.
// A failed unwrap is a failed test; a scenario reads best top to bottom.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lineprobe_sync::{CollectorClient, DemoCase, LineFilter, SyncConfig, demo_cases};
use serde_json::Value;
use support::{
    FaultProxy, Lab, Proc, SyncCli, TestDb, backends, bounded, cursor_of, demo_data_dir,
    demo_sources_toml, q, qp, repo_config_dir,
};

// Generous: the machines running the tests may be busy; the bound only
// catches a test that hangs.
const TEST_BOUND: Duration = Duration::from_mins(3);

// --- helpers ----------------------------------------------------------------

/// The demo's reports, made now.
fn cases() -> Vec<DemoCase> {
    demo_cases(chrono::Utc::now().fixed_offset()).unwrap()
}

/// install id → expected verdict, for the cases the pipeline judges.
fn expected_verdicts(cases: &[DemoCase]) -> BTreeMap<String, String> {
    cases
        .iter()
        .filter(|c| c.expect != "quarantined")
        .map(|c| (c.report.install_id.as_str().to_owned(), c.expect.to_owned()))
        .collect()
}

/// The install ids of the judged cases whose declared `key` is `value`.
fn judged_with(cases: &[DemoCase], key: &str, value: &str) -> BTreeSet<String> {
    cases
        .iter()
        .filter(|c| c.expect != "quarantined")
        .filter(|c| serde_json::to_value(&c.report).unwrap()["declared"][key] == value)
        .map(|c| c.report.install_id.as_str().to_owned())
        .collect()
}

/// install id → verdict from a `verdicts --format json` answer.
fn verdicts_by_install(json: &Value) -> BTreeMap<String, String> {
    json.as_array()
        .expect("a JSON array")
        .iter()
        .map(|row| {
            (
                row["install_id"].as_str().unwrap().to_owned(),
                row["verdict"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Writes a sync configuration whose own database is a decoy (every
/// command is given `--database`, which must win) and returns its path.
fn write_config(dir: &Path, name: &str, body: &str) -> PathBuf {
    let decoy = dir.join("decoy").join("never-opened.sqlite3");
    let text = format!(
        "data_dir = {data}\n\n[database]\nurl = {decoy}\n\n[pipeline]\nbatch = 4\n{body}",
        data = qp(&dir.join("data")),
        decoy = q(format!("sqlite://{}", decoy.display())),
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn decoy_untouched(dir: &Path) {
    assert!(
        !dir.join("decoy").exists(),
        "the configured database was opened although --database overrides it"
    );
    assert!(!dir.join("data").join("sync.sqlite3").exists());
}

// --- 1. the example configuration -------------------------------------------

/// The keys serde knows for the table (or array of tables) at `section`
/// (`""`: the top level), read from the "unknown field" error of a probe
/// key: a key added to the structs shows up here without anyone listing it.
/// `None` when `section` names no table.
fn known_keys(section: &str) -> Option<BTreeSet<String>> {
    const PROBE: &str = "zz_not_a_key";
    let attempts = if section.is_empty() {
        vec![format!("{PROBE} = 1\n")]
    } else {
        vec![
            format!("[{section}]\n{PROBE} = 1\n"),
            format!("[[{section}]]\n{PROBE} = 1\n"),
        ]
    };
    for text in attempts {
        let Err(err) = SyncConfig::from_toml_with_env(&text, "probe", []) else {
            continue;
        };
        let err = err.to_string();
        let Some((_, listed)) = err
            .split_once(&format!("unknown field `{PROBE}`"))
            .and_then(|(_, rest)| rest.split_once("expected"))
        else {
            continue;
        };
        let keys: BTreeSet<String> = listed
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        assert!(!keys.is_empty(), "no keys read from {err:?}");
        return Some(keys);
    }
    None
}

/// What the file names: every `(section, key)` it assigns, written out or
/// commented out (`# key = …` documents an optional key, and so does
/// `{ key = … }` in an example value), and every table header.
struct Documented {
    keys: BTreeSet<(String, String)>,
    headers: BTreeSet<String>,
}

impl Documented {
    fn read(text: &str) -> Self {
        let mut section = String::new();
        let mut keys = BTreeSet::new();
        let mut headers = BTreeSet::new();
        for raw in text.lines() {
            let line = raw.trim_start().trim_start_matches('#').trim();
            if let Some(header) = line.strip_prefix('[') {
                let name = header
                    .trim_start_matches('[')
                    .split(']')
                    .next()
                    .unwrap()
                    .trim();
                // A header documents the key of the table it opens.
                let (parent, key) = name.rsplit_once('.').unwrap_or(("", name));
                keys.insert((parent.to_owned(), key.to_owned()));
                headers.insert(name.to_owned());
                name.clone_into(&mut section);
            } else {
                for key in assigned(line) {
                    keys.insert((section.clone(), key.to_owned()));
                }
            }
        }
        Self { keys, headers }
    }

    /// A table without a header of its own (an array of inline tables) is
    /// documented inside its parent's section.
    fn has(&self, section: &str, key: &str) -> bool {
        let named = |s: &str| self.keys.contains(&(s.to_owned(), key.to_owned()));
        named(section)
            || (!self.headers.contains(section)
                && section
                    .rsplit_once('.')
                    .map_or(!section.is_empty() && named(""), |(parent, _)| {
                        named(parent)
                    }))
    }
}

/// The keys assigned in a line: each `key =` (not `==`).
fn assigned(line: &str) -> Vec<&str> {
    let is_key = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let mut out = Vec::new();
    for (at, _) in line.match_indices('=') {
        if line[at + 1..].starts_with('=') || line[..at].ends_with(['=', '!', '<', '>']) {
            continue;
        }
        let before = line[..at].trim_end();
        let start = before
            .char_indices()
            .rev()
            .find(|(_, c)| !is_key(*c))
            .map_or(0, |(i, c)| i + c.len_utf8());
        if start < before.len() {
            out.push(&before[start..]);
        }
    }
    out
}

/// The keys of the configuration (its top level, its tables and their
/// tables, found from the structs themselves) that `text` does not name.
fn undocumented(text: &str) -> Vec<String> {
    let documented = Documented::read(text);
    let mut missing = Vec::new();
    let mut sections = vec![String::new()];
    let mut next = 0;
    while let Some(section) = sections.get(next).cloned() {
        next += 1;
        let keys = known_keys(&section).unwrap_or_else(|| panic!("[{section}] is no table"));
        for key in keys {
            if !documented.has(&section, &key) {
                missing.push(format!("{section}.{key}"));
            }
            let child = if section.is_empty() {
                key
            } else {
                format!("{section}.{key}")
            };
            if child.split('.').count() <= 2 && known_keys(&child).is_some() {
                sections.push(child);
            }
        }
    }
    for expected in ["database", "pull", "collector", "resolve.source", "log"] {
        assert!(sections.iter().any(|s| s == expected), "{sections:?}");
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_configuration_documents_every_key_and_validates() {
    let example = repo_config_dir().join("sync.example.toml");
    let text = std::fs::read_to_string(&example).unwrap();

    // Every key of every table is in the file.
    let missing = undocumented(&text);
    assert!(
        missing.is_empty(),
        "config/sync.example.toml does not document {missing:?}"
    );
    // The check notices a key that is not there (also as a comment).
    let without = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("max_pages_per_round"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(undocumented(&without), ["pull.max_pages_per_round"]);

    // It parses and validates, its token variable set.
    let token_var = "LINEPROBE_COLLECTOR_1_TOKEN";
    let token = support::TOKEN.to_owned();
    let env = vec![(token_var.to_owned(), token.clone())];
    let config = SyncConfig::load(Some(&example), env, None).unwrap();
    assert_eq!(config.collectors.len(), 1);
    let endpoint = &config.collectors[0];
    assert_eq!(endpoint.token_env.as_deref(), Some(token_var));
    assert!(!config.resolve.sources.is_empty());
    // Its address sources open (paths relative to the file's folder), and
    // so do the catalogs and the classifier.
    let catalog = config.catalog().unwrap();
    config.chain(&catalog).unwrap();
    config.classifier().unwrap();
    // With a certificate where `ca_file` points, the collector client is
    // built from it and the token is read from `token_env`; without the
    // variable, the error names it.
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let mut with_ca = endpoint.clone();
    with_ca.ca_file = Some(ca);
    let lookup = |name: &str| (name == token_var).then(|| token.clone());
    CollectorClient::with_env(&with_ca, &lookup).unwrap();
    let err = CollectorClient::with_env(&with_ca, &|_| None)
        .unwrap_err()
        .to_string();
    assert!(err.contains(token_var), "{err}");

    // Without `ca_file` the client trusts the public roots.
    CollectorClient::with_env(endpoint, &lookup).unwrap();

    // The commented-out examples of optional sources are valid as written.
    for kind in ["mmdb", "http"] {
        let marker = format!("# kind = \"{kind}\"");
        let lines: Vec<&str> = text.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.trim() == marker)
            .unwrap_or_else(|| panic!("no commented {kind} source"));
        let block: String = lines[at - 1..]
            .iter()
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.trim_start_matches('#'))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("[[resolve.source]]", "[[source]]")
            .replace("[resolve.source.", "[source.");
        let chain = lineprobe_sync::ChainConfig::from_toml(kind, &block)
            .unwrap_or_else(|e| panic!("the {kind} example does not parse: {e}\n{block}"));
        chain.validate().unwrap();
        assert_eq!(chain.sources.len(), 1);
    }

    // The binary reads it too (`--database` wins over its database).
    let db = dir.path().join("example.sqlite3");
    let cli = SyncCli::new(
        &example,
        &format!("sqlite://{}", db.display()),
        &dir.path().join("logs"),
    );
    let status = bounded(TEST_BOUND, "status", cli.status()).await;
    assert_eq!(status["database"], "sqlite");
    assert!(db.exists());
}

// --- 1b. configuration errors -----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_exits_2_naming_the_key_for_every_subcommand() {
    bounded(TEST_BOUND, "bad configuration", async {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let db = format!("sqlite://{}", dir.path().join("db.sqlite3").display());
        // (configuration, subcommand, what the message must name)
        let cases: [(&str, &[&str], &[&str]); 9] = [
            (
                "[pull]\ninterval_s = 0\n",
                &["status"],
                &["pull.interval_s"],
            ),
            ("[pull]\nintervall_s = 5\n", &["verdicts"], &["intervall_s"]),
            (
                "[[collector]]\nname = \"c1\"\nurl = \"http://127.0.0.1:9\"\ntoken_env = \"X\"\n",
                &["pull", "--once"],
                &["collector[0]", "allow_plain_http"],
            ),
            ("[pipeline]\nbatch = 0\n", &["process"], &["pipeline.batch"]),
            ("[log]\nformat = \"xml\"\n", &["reprocess"], &["log.format"]),
            (
                "[pull]\nmax_pages_per_round = 0\n",
                &["run"],
                &["pull.max_pages_per_round"],
            ),
            (
                "[database]\nurl = \"mysql://x\"\n",
                &["quarantine"],
                &["database.url"],
            ),
            (
                "[[collector]]\nname = \"a\"\nurl = \"http://127.0.0.1:9\"\n\
                 allow_plain_http = true\ntoken_env = \"X\"\n\
                 [[collector]]\nname = \"a\"\nurl = \"http://127.0.0.1:10\"\n\
                 allow_plain_http = true\ntoken_env = \"X\"\n",
                &["pull", "--once", "--no-process"],
                &["collector[1].name"],
            ),
            (
                "[[resolve.source]]\nkind = \"ipplan\"\npath = \"missing-plan.csv\"\n",
                &["process"],
                &["missing-plan.csv"],
            ),
        ];
        for (i, (toml, args, names)) in cases.iter().enumerate() {
            let config = dir.path().join(format!("bad-{i}.toml"));
            std::fs::write(&config, toml).unwrap();
            let mut cli = SyncCli::new(&config, &db, &logs);
            if toml.contains("[database]") {
                // Only the configured database is wrong here.
                cli.database = None;
            }
            let out = cli.run(args).await;
            assert_eq!(out.code(), Some(2), "{toml} / {args:?}: {out:?}");
            for name in *names {
                assert!(
                    out.stderr.contains(name),
                    "{args:?} should name {name}: {out:?}"
                );
            }
        }

        // `--database` is checked like the key it overrides.
        let good = dir.path().join("good.toml");
        std::fs::write(&good, "").unwrap();
        let out = SyncCli::new(&good, "mysql://nope", &logs)
            .run(&["status"])
            .await;
        assert_eq!(out.code(), Some(2), "{out:?}");
        assert!(out.stderr.contains("database.url"), "{out:?}");

        // An environment override is checked too, and named by its key.
        let mut cli = SyncCli::new(&good, &db, &logs);
        cli.env.push((
            "LINEPROBE_SYNC__PULL__INTERVAL_S".to_owned(),
            "0".to_owned(),
        ));
        let out = cli.run(&["status"]).await;
        assert_eq!(out.code(), Some(2), "{out:?}");
        assert!(out.stderr.contains("pull.interval_s"), "{out:?}");

        // A missing file is named.
        let out = SyncCli::new(&dir.path().join("absent.toml"), &db, &logs)
            .run(&["status"])
            .await;
        assert_eq!(out.code(), Some(2), "{out:?}");
        assert!(out.stderr.contains("absent.toml"), "{out:?}");

        // Pulling with no collector configured says what to add.
        let out = SyncCli::new(&good, &db, &logs)
            .run(&["pull", "--once"])
            .await;
        assert_eq!(out.code(), Some(2), "{out:?}");
        assert!(out.stderr.contains("[[collector]]"), "{out:?}");

        // Bad filter values name the flag.
        for (args, flag) in [
            (&["verdicts", "--verdict", "guilty"][..], "--verdict"),
            (&["verdicts", "--province", "Atlantis"][..], "--province"),
            (&["reprocess", "--since", "last tuesday"][..], "--since"),
        ] {
            let out = SyncCli::new(&good, &db, &logs).run(args).await;
            assert_eq!(out.code(), Some(2), "{args:?}: {out:?}");
            assert!(out.stderr.contains(flag), "{args:?}: {out:?}");
        }

        // Listings and reports of a database that is not there (a mistyped
        // path) say so, and create nothing; `status` names the database.
        let typo = dir.path().join("sycn.sqlite3");
        let typo_url = format!("sqlite://{}", typo.display());
        for args in [
            &["verdicts"][..],
            &["quarantine"][..],
            &["report", "--period", "day", "--out", "reports"][..],
        ] {
            let out = SyncCli::new(&good, &typo_url, &logs).run(args).await;
            assert_eq!(out.code(), Some(2), "{args:?}: {out:?}");
            assert!(
                out.stderr.contains("no database at") && out.stderr.contains("sycn.sqlite3"),
                "{args:?}: {out:?}"
            );
            assert!(!typo.exists(), "{args:?} created the database");
        }
        let out = SyncCli::new(&good, &db, &logs).run(&["status"]).await;
        assert!(out.status.success(), "{out:?}");
        let location = out.json()["database_location"].as_str().unwrap().to_owned();
        assert!(location.ends_with("db.sqlite3"), "{location}");
    })
    .await;
}

// --- 1c. several processes opening a new database at once -----------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_opening_a_new_database_at_once_all_succeed() {
    // The daemon started and `status` asked right away: both find the
    // database new and bring its schema up to date at the same moment.
    bounded(TEST_BOUND, "concurrent first opens", async {
        let root = tempfile::tempdir().unwrap();
        let config = root.path().join("empty.toml");
        std::fs::write(&config, "").unwrap();
        for db in backends("concurrent_open", root.path()).await {
            for attempt in 0..3 {
                let url = match db.backend {
                    support::Backend::Sqlite => format!(
                        "sqlite://{}",
                        root.path()
                            .join(format!("race-{attempt}.sqlite3"))
                            .display()
                    ),
                    support::Backend::Postgres => db.url.clone(),
                };
                if attempt > 0 && db.backend == support::Backend::Postgres {
                    break;
                }
                let cli = SyncCli::new(&config, &url, &root.path().join("logs"));
                let mut children: Vec<Proc> = (0..6).map(|_| cli.spawn(&["status"])).collect();
                for child in &mut children {
                    let out = child.wait(support::RUN_BOUND).await;
                    assert!(out.status.success(), "{}: {out:?}", db.label());
                    assert_eq!(out.json()["counts"]["raw"], 0);
                }
            }
        }
    })
    .await;
}

// --- 1d. a collector that is down -------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_fails_a_pull_once_with_one_message() {
    bounded(TEST_BOUND, "collector down", async {
        let dir = tempfile::tempdir().unwrap();
        // A loopback port nobody listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = write_config(
            dir.path(),
            "down.toml",
            &format!(
                "[[collector]]\nname = \"down\"\nurl = \"http://127.0.0.1:{port}\"\n\
                 allow_plain_http = true\ntoken_env = \"{}\"\n",
                support::TOKEN_ENV
            ),
        );
        let db = format!("sqlite://{}", dir.path().join("db.sqlite3").display());
        let out = SyncCli::new(&config, &db, &dir.path().join("logs"))
            .run(&["pull", "--once"])
            .await;
        // Exit 1 (the pull failed, the configuration is fine); the failure
        // is logged once, and the last line names the collector once and
        // says what to check.
        assert_eq!(out.code(), Some(1), "{out:?}");
        assert_eq!(out.stderr.matches("pull failed").count(), 1, "{out:?}");
        let last = out.stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("lineprobe-sync: collector \"down\": GET /export: cannot connect"),
            "{out:?}"
        );
        assert!(last.contains("check `url`"), "{out:?}");
        // The log is not a terminal: no colour codes in it.
        assert!(!out.stderr.contains('\u{1b}'), "{out:?}");
    })
    .await;
}

// --- 2. pull, verdicts, quarantine, status ----------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_once_then_verdicts_quarantine_and_status_through_the_binary() {
    bounded(TEST_BOUND, "pull and list", async {
        let lab = Lab::start("e2e-node", true, 4).await;
        let cases = cases();
        lab.post_cases(&cases).await;
        let total = cases.len() as u64;
        let expected = expected_verdicts(&cases);
        let quarantined: Vec<&DemoCase> =
            cases.iter().filter(|c| c.expect == "quarantined").collect();

        let root = tempfile::tempdir().unwrap();
        for db in backends("pull_once_e2e", root.path()).await {
            let dir = tempfile::tempdir().unwrap();
            let body = format!(
                "\n[pull]\ninterval_s = 1\nmax_pages_per_round = 1000\n{}{}",
                lab.collector_toml("dmz-e2e", ""),
                demo_sources_toml(&demo_data_dir().join("ipplan.csv"), "demo-v1"),
            );
            let config = write_config(dir.path(), "sync.toml", &body);
            let cli = SyncCli::new(&config, &db.url, &dir.path().join("logs"));
            check_pull_and_listings(&cli, &db, &lab, &cases, &expected, &quarantined, total).await;
            decoy_untouched(dir.path());
        }
        assert_eq!(lab.stats().await.acked_up_to, total);
    })
    .await;
}

async fn check_pull_and_listings(
    cli: &SyncCli,
    db: &TestDb,
    lab: &Lab,
    cases: &[DemoCase],
    expected: &BTreeMap<String, String>,
    quarantined: &[&DemoCase],
    total: u64,
) {
    let backend = db.label();
    cli.ok(&["pull", "--once"]).await;

    // JSON: the expected verdict on every line.
    let json = cli.ok(&["verdicts", "--format", "json"]).await.json();
    assert_eq!(&verdicts_by_install(&json), expected, "{backend}: {json:#}");
    for row in json.as_array().unwrap() {
        assert!(
            !row["reasons"].as_array().unwrap().is_empty(),
            "{backend}: every verdict has its reasons: {row:#}"
        );
        assert_eq!(row["reports"], 1);
    }
    // CSV: the same.
    let csv_text = cli.ok(&["verdicts", "--format", "csv"]).await.stdout;
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (install, verdict) = (col("install_id"), col("verdict"));
    let from_csv: BTreeMap<String, String> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[install].to_owned(), r[verdict].to_owned())
        })
        .collect();
    assert_eq!(&from_csv, expected, "{backend}: {csv_text}");
    // The table names every verdict.
    let table = cli.ok(&["verdicts"]).await.stdout;
    for v in expected.values() {
        assert!(table.contains(v.as_str()), "{backend}: {table}");
    }

    // Filters.
    let listed = |args: &'static [&'static str]| async move {
        let mut all = vec!["verdicts", "--format", "json"];
        all.extend_from_slice(args);
        let json = cli.ok(&all).await.json();
        verdicts_by_install(&json)
            .into_keys()
            .collect::<BTreeSet<String>>()
    };
    let non_compliant: BTreeSet<String> = expected
        .iter()
        .filter(|(_, v)| *v == "non_compliant")
        .map(|(k, _)| k.clone())
        .collect();
    assert!(!non_compliant.is_empty());
    assert_eq!(listed(&["--verdict", "non_compliant"]).await, non_compliant);
    let guangdong = judged_with(cases, "province", "CN-GD");
    assert!(guangdong.len() >= 2 && guangdong.len() < expected.len());
    assert_eq!(listed(&["--province", "广东"]).await, guangdong);
    let mobile = judged_with(cases, "carrier", "china_mobile");
    assert!(mobile.len() >= 2 && mobile.len() < expected.len());
    assert_eq!(listed(&["--carrier", "移动"]).await, mobile);
    assert_eq!(
        listed(&["--carrier", "移动", "--province", "广东"]).await,
        mobile.intersection(&guangdong).cloned().collect()
    );
    assert_eq!(listed(&["--limit", "3"]).await.len(), 3);
    // Every report came from a probe the collector trusted.
    let all: BTreeSet<String> = expected.keys().cloned().collect();
    assert_eq!(listed(&["--trust", "normal"]).await, all);
    assert!(listed(&["--trust", "low"]).await.is_empty());
    // A filter that means nothing is the caller's mistake, said plainly.
    for (args, says) in [
        (["--trust", "lowest"], "not a trust level"),
        (["--carrier", "no such carrier"], "--carrier"),
    ] {
        let mut all = vec!["verdicts"];
        all.extend_from_slice(&args);
        let out = cli.run(&all).await;
        assert_eq!(out.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }

    // Quarantine: the incomplete report, with its reasons.
    let q = cli.ok(&["quarantine"]).await.json();
    let q = q.as_array().unwrap();
    assert_eq!(q.len(), quarantined.len(), "{backend}: {q:#?}");
    for (row, case) in q.iter().zip(quarantined) {
        assert_eq!(row["install_id"], case.report.install_id.as_str());
        let reasons: Value = serde_json::from_str(row["reasons_json"].as_str().unwrap()).unwrap();
        assert!(
            reasons.as_array().is_some_and(|r| r.len() >= 2),
            "{backend}: {reasons:#}"
        );
        let summary = row["summary"].as_str().unwrap();
        assert!(
            summary.contains("declared") && summary.contains("trace.hops"),
            "{summary}"
        );
    }

    // Status: the cursor at the collector's last report, acknowledged.
    let status = cli.status().await;
    assert_eq!(status["database"], backend);
    let cursor = cursor_of(&status, "dmz-e2e");
    assert_eq!(cursor["node_id"], lab.node.as_str());
    assert_eq!(cursor["after_seq"], total);
    assert_eq!(cursor["acked_seq"], total);
    assert_eq!(cursor["pulled_total"], total);
    assert!(cursor["last_error"].is_null(), "{cursor:#}");
    let counts = &status["counts"];
    assert_eq!(counts["raw"], total);
    assert_eq!(counts["pending"], 0);
    assert_eq!(counts["quarantined"], quarantined.len());
    assert_eq!(counts["lines"], expected.len());
    let staging = lab.stats().await;
    assert_eq!((staging.acked_up_to, staging.unacked), (total, 0));

    // Pulling, processing and reprocessing again change nothing.
    cli.ok(&["pull", "--once"]).await;
    cli.ok(&["process"]).await;
    cli.ok(&["reprocess"]).await;
    let again = cli.status().await;
    assert_eq!(again["counts"], status["counts"], "{backend}");
    assert_eq!(
        verdicts_by_install(&cli.ok(&["verdicts", "--format", "json"]).await.json()),
        *expected
    );
    let rows = db.raw_rows().await;
    support::assert_exactly_once(&rows, &lab.node, total, backend);
    db.integrity_check().await;
}

// --- 6. the daemon ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_pulls_reports_posted_while_it_runs_and_stops_on_sigterm() {
    bounded(TEST_BOUND, "run", async {
        let lab = Lab::start("daemon-node", false, 2).await;
        let cases = cases();
        let judged: Vec<DemoCase> = cases
            .iter()
            .filter(|c| c.expect != "quarantined")
            .cloned()
            .collect();
        let (first, second) = judged.split_at(3);
        lab.post_cases(first).await;
        let mut posted = first.len();
        let mut second_posted = false;

        let root = tempfile::tempdir().unwrap();
        // The daemon reaches the collector through a proxy that can play
        // a collector that is down.
        let proxy = FaultProxy::start(lab.export_addr()).await;
        for db in backends("run_daemon", root.path()).await {
            let label = db.label();
            let dir = tempfile::tempdir().unwrap();
            let body = format!(
                "\n[pull]\ninterval_s = 1\nmax_pages_per_round = 1000\n{}{}",
                support::collector_toml("dmz-daemon", &proxy.url(), None, "timeout_s = 5"),
                demo_sources_toml(&demo_data_dir().join("ipplan.csv"), "demo-v1"),
            );
            let config = write_config(dir.path(), "sync.toml", &body);
            let cli = SyncCli::new(&config, &db.url, &dir.path().join("logs"));
            let mut daemon = cli.spawn(&["run"]);

            let wait_for = |lines: usize| {
                let cli = cli.clone();
                async move {
                    let started = Instant::now();
                    loop {
                        let out = cli.run(&["verdicts", "--format", "json"]).await;
                        if out.status.success() && out.json().as_array().unwrap().len() == lines {
                            return Ok(verdicts_by_install(&out.json()));
                        }
                        if started.elapsed() > Duration::from_mins(1) {
                            return Err(format!(
                                "{label}: the daemon did not bring in {lines} lines: {out:?}"
                            ));
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            };
            let daemon_log =
                |daemon: &Proc| format!("\n--- the daemon's stderr\n{}", daemon.stderr());
            if let Err(e) = wait_for(posted).await {
                panic!("{e}{}", daemon_log(&daemon));
            }
            if !second_posted {
                lab.post_cases(second).await;
                posted += second.len();
                second_posted = true;
            }
            let verdicts = match wait_for(posted).await {
                Ok(v) => v,
                Err(e) => panic!("{e}{}", daemon_log(&daemon)),
            };
            assert_eq!(verdicts, expected_verdicts(&judged), "{label}");
            assert!(daemon.running(), "the daemon is still running");

            // The collector goes down: the daemon records the error and
            // carries on; once it answers again (with nothing new) the
            // error is cleared.
            let last_error = |cli: SyncCli| async move {
                cursor_of(&cli.status().await, "dmz-daemon")["last_error"].clone()
            };
            proxy.set_down(true);
            let started = Instant::now();
            while last_error(cli.clone()).await.is_null() {
                assert!(
                    started.elapsed() < Duration::from_secs(40),
                    "{label}: no error"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            proxy.set_down(false);
            let started = Instant::now();
            loop {
                let error = last_error(cli.clone()).await;
                if error.is_null() {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(40),
                    "{label}: the error stays after the collector is back: {error}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert!(daemon.running(), "the daemon is still running");

            let asked = Instant::now();
            daemon.signal("-TERM");
            let out = daemon.wait(Duration::from_secs(15)).await;
            let took = asked.elapsed();
            assert_eq!(out.code(), Some(0), "{out:?}");
            assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");
            let status = cli.status().await;
            assert_eq!(status["counts"]["raw"], posted);
            assert_eq!(status["counts"]["pending"], 0);
            support::assert_exactly_once(&db.raw_rows().await, &lab.node, posted as u64, "run");
            decoy_untouched(dir.path());
        }
    })
    .await;
}

// --- 7. reprocess after the IP data changed ---------------------------------

/// The demo plan with the block of the Shenzhen China Mobile line's egress
/// moved to Changsha, Hunan.
fn moved_plan(dir: &Path) -> PathBuf {
    let (_, v2) = support::demo_plan_and_moved();
    let path = dir.join("ipplan-v2.csv");
    std::fs::write(&path, v2).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprocess_after_the_ip_data_changed_keeps_the_old_verdict_as_history() {
    bounded(TEST_BOUND, "reprocess", async {
        let lab = Lab::start("reprocess-node", false, 50).await;
        let cases = cases();
        lab.post_cases(&cases).await;
        let moved_line = "account:07552660101";
        let moved_install = "SZ-NS-000101";

        let root = tempfile::tempdir().unwrap();
        for db in backends("reprocess", root.path()).await {
            let backend = db.label();
            let dir = tempfile::tempdir().unwrap();
            let collector = lab.collector_toml("dmz-re", "");
            let pull = "\n[pull]\ninterval_s = 1\nmax_pages_per_round = 1000\n";
            let v1 = demo_data_dir().join("ipplan.csv");
            let config_v1 = write_config(
                dir.path(),
                "v1.toml",
                &format!("{pull}{collector}{}", demo_sources_toml(&v1, "demo-v1")),
            );
            let cli = SyncCli::new(&config_v1, &db.url, &dir.path().join("logs"));
            cli.ok(&["pull", "--once"]).await;
            let before =
                verdicts_by_install(&cli.ok(&["verdicts", "--format", "json"]).await.json());
            assert_eq!(before, expected_verdicts(&cases), "{backend}");
            let store = db.store().await;
            let counts_before = store.counts().await.unwrap();
            // Which lines used the China Mobile plan (their verdict records
            // its version and so changes with it).
            let mut uses_plan = BTreeMap::new();
            for line in store.lines(&LineFilter::default()).await.unwrap() {
                let verdicts = store.line_verdicts(&line.line_key).await.unwrap();
                assert_eq!(verdicts.len(), 1);
                uses_plan.insert(
                    line.line_key.clone(),
                    verdicts[0].record.data_versions_json.contains("cmcc-plan"),
                );
            }
            assert!(uses_plan[moved_line]);
            assert!(
                uses_plan.values().any(|u| !u),
                "some lines do not use the plan"
            );

            // New plan data: the block moves, its version changes.
            let v2 = moved_plan(dir.path());
            let config_v2 = write_config(
                dir.path(),
                "v2.toml",
                &format!(
                    "{pull}{collector}{}",
                    demo_sources_toml(&v2, "demo-v1").replacen(
                        "version = \"demo-v1\"",
                        "version = \"plan-v2\"",
                        1
                    )
                ),
            );
            let cli = SyncCli {
                config: config_v2,
                ..cli
            };
            // A reprocess limited to reports from tomorrow on changes nothing.
            // A day is taken in report.utc_offset (+08:00 by default), so
            // "tomorrow" is China's.
            let china_now =
                chrono::Utc::now().with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap());
            let tomorrow = (china_now + chrono::Duration::days(1))
                .format("%Y-%m-%d")
                .to_string();
            cli.ok(&["reprocess", "--since", &tomorrow]).await;
            assert_eq!(store.counts().await.unwrap(), counts_before, "{backend}");

            let since_yesterday = (china_now - chrono::Duration::days(1))
                .format("%Y-%m-%d")
                .to_string();
            cli.ok(&["reprocess", "--since", &since_yesterday]).await;

            let after =
                verdicts_by_install(&cli.ok(&["verdicts", "--format", "json"]).await.json());
            let mut expected_after = before.clone();
            expected_after.insert(moved_install.to_owned(), "violating_ip".to_owned());
            assert_eq!(after, expected_after, "{backend}");

            let counts = store.counts().await.unwrap();
            assert_eq!(
                (
                    counts.raw,
                    counts.observations,
                    counts.lines,
                    counts.quarantined
                ),
                (
                    counts_before.raw,
                    counts_before.observations,
                    counts_before.lines,
                    counts_before.quarantined
                ),
                "{backend}: reprocessing counts no report twice"
            );
            let changed = uses_plan.values().filter(|u| **u).count() as u64;
            assert_eq!(
                counts.verdicts,
                counts_before.verdicts + changed,
                "{backend}"
            );
            assert_eq!(counts.line_history, counts_before.line_history + changed);
            for (line, uses) in &uses_plan {
                let verdicts = store.line_verdicts(line).await.unwrap();
                let history = store.line_history(line).await.unwrap();
                let row = store.line(line).await.unwrap().unwrap();
                assert_eq!(row.reports, 1, "{line}: counts unchanged");
                if *uses {
                    assert_eq!(verdicts.len(), 2, "{backend} {line}");
                    assert_eq!(history.len(), 1, "{backend} {line}");
                    let current = verdicts.iter().find(|v| v.id == row.verdict_id).unwrap();
                    let old = verdicts.iter().find(|v| v.id != row.verdict_id).unwrap();
                    assert!(
                        current.record.data_versions_json.contains("plan-v2"),
                        "{current:?}"
                    );
                    assert!(
                        !old.record.data_versions_json.contains("plan-v2"),
                        "{old:?}"
                    );
                    assert_eq!(history[0].verdict_id, old.id);
                    assert_eq!(history[0].verdict, old.record.verdict);
                } else {
                    assert_eq!(verdicts.len(), 1, "{backend} {line}");
                    assert!(history.is_empty(), "{backend} {line}");
                }
            }
            let moved = store.line(moved_line).await.unwrap().unwrap();
            assert_eq!(moved.verdict, "violating_ip");
            assert_eq!(moved.actual_province.as_deref(), Some("CN-HN"));
            let history = store.line_history(moved_line).await.unwrap();
            assert_eq!(history[0].verdict, "compliant");
            assert_eq!(history[0].actual_province.as_deref(), Some("CN-GD"));

            // Reprocessing again with the same data adds nothing.
            cli.ok(&["reprocess"]).await;
            assert_eq!(store.counts().await.unwrap(), counts, "{backend}");
            store.close().await;
            db.integrity_check().await;
            decoy_untouched(dir.path());
        }
    })
    .await;
}

// --- 8. the same verdicts on both databases ---------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_dataset_gives_the_same_verdicts_on_postgresql_and_sqlite() {
    bounded(TEST_BOUND, "both databases", async {
        let root = tempfile::tempdir().unwrap();
        let dbs = backends("same_verdicts", root.path()).await;
        if dbs.len() < 2 {
            eprintln!("SKIPPED the PostgreSQL/SQLite comparison: no PostgreSQL (see above)");
            return;
        }
        let lab = Lab::start("compare-node", false, 3).await;
        let cases = cases();
        lab.post_cases(&cases).await;
        let mut answers = Vec::new();
        for db in &dbs {
            let dir = tempfile::tempdir().unwrap();
            let body = format!(
                "\n[pull]\ninterval_s = 1\nmax_pages_per_round = 1000\n{}{}",
                lab.collector_toml("dmz-cmp", ""),
                demo_sources_toml(&demo_data_dir().join("ipplan.csv"), "demo-v1"),
            );
            let config = write_config(dir.path(), "sync.toml", &body);
            let cli = SyncCli::new(&config, &db.url, &dir.path().join("logs"));
            cli.ok(&["pull", "--once"]).await;
            let mut verdicts = cli.ok(&["verdicts", "--format", "json"]).await.json();
            verdicts
                .as_array_mut()
                .unwrap()
                .sort_by_key(|row| row["line"].as_str().unwrap().to_owned());
            let mut quarantine = cli.ok(&["quarantine"]).await.json();
            for row in quarantine.as_array_mut().unwrap() {
                let row = row.as_object_mut().unwrap();
                for volatile in ["id", "raw_id", "quarantined_at_ms"] {
                    row.remove(volatile);
                }
            }
            let status = cli.status().await;
            // Every stored verdict, not only the current ones.
            let store = db.store().await;
            let mut all = Vec::new();
            for row in verdicts.as_array().unwrap() {
                for v in store
                    .line_verdicts(row["line"].as_str().unwrap())
                    .await
                    .unwrap()
                {
                    all.push((
                        v.line_key,
                        v.record.verdict,
                        v.record.verdict_key,
                        v.record.reasons_json,
                        v.record.data_versions_json,
                        v.record.actual_carrier,
                        v.record.actual_province,
                        v.record.actual_city,
                    ));
                }
            }
            store.close().await;
            answers.push((verdicts, quarantine, status["counts"].clone(), all));
        }
        let (sqlite, pg) = (&answers[0], &answers[1]);
        assert_eq!(
            expected_verdicts(&cases),
            verdicts_by_install(&sqlite.0),
            "the verdicts are the expected ones"
        );
        assert_eq!(sqlite.0, pg.0, "verdict listings differ");
        assert_eq!(sqlite.1, pg.1, "quarantine listings differ");
        assert_eq!(sqlite.2, pg.2, "counts differ");
        assert_eq!(sqlite.3, pg.3, "stored verdicts differ");
    })
    .await;
}
