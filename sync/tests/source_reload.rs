//! The daemon (`lineprobe-sync run`) opens the address sources again when
//! their data files change, so reports arriving afterwards are judged with
//! the new data without a restart, and the reports it judged while the
//! files changed are judged again with it. Through the real binary, on
//! SQLite (the reload does not depend on the database); the same for a
//! one-off run; the id-range reprocessing they use on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lineprobe_shared::{Catalog, Classifier, ClassifierConfig, ReportId};
use lineprobe_sync::{ChainConfig, DemoCase, Pipeline, RawIdRange, demo_cases};
use support::{Lab, Proc, SyncCli, TestDb, bounded, demo_sources_toml};

const TEST_BOUND: Duration = Duration::from_mins(3);

/// The Shenzhen China Mobile line whose egress block the new plan moves.
const LINE: &str = "account:07552660101";

fn moved_line_case() -> DemoCase {
    demo_cases(chrono::Utc::now().fixed_offset())
        .unwrap()
        .into_iter()
        .find(|c| c.report.install_id.as_str() == "SZ-NS-000101")
        .expect("the demo's Shenzhen China Mobile line")
}

/// Waits until the line's current verdict is `verdict`.
async fn wait_for_verdict(cli: &SyncCli, daemon: &Proc, verdict: &str) {
    let started = Instant::now();
    loop {
        let out = cli.run(&["verdicts", "--format", "json"]).await;
        if out.status.success() {
            let rows = out.json();
            let current = rows
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["line"] == LINE)
                .map(|r| r["verdict"].clone());
            if current.as_ref().and_then(|v| v.as_str()) == Some(verdict) {
                return;
            }
        }
        assert!(
            started.elapsed() < Duration::from_mins(1),
            "the line never became {verdict}: {out:?}\n--- the daemon's stderr\n{}",
            daemon.stderr()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Replaces `path` as an operator should: the new file is written beside
/// it and renamed over it.
fn replace(path: &Path, text: &str) {
    let next = path.with_extension("csv.new");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// A collector holding a report of the Shenzhen line, and the daemon
/// pulling from it with the demo's sources, the China Mobile plan a copy
/// that the test replaces.
struct Running {
    lab: Lab,
    case: DemoCase,
    dir: tempfile::TempDir,
    plan: PathBuf,
    moved: String,
    cli: SyncCli,
    daemon: Proc,
}

impl Running {
    /// Starts it, `extra` appended to the daemon's configuration, and waits
    /// for the line's first verdict (compliant under the plan as it is).
    async fn start(node: &str, extra: &str) -> Running {
        Self::start_with(node, None, extra).await
    }

    /// [`Running::start`] with changed files settling `settle_s` seconds
    /// before they are opened again (the daemon's default when `None`).
    async fn start_with(node: &str, settle_s: Option<u64>, extra: &str) -> Running {
        let lab = Lab::start(node, false, 50).await;
        let case = moved_line_case();
        lab.post_cases(std::slice::from_ref(&case)).await;
        let dir = tempfile::tempdir().unwrap();
        let plan = dir.path().join("cmcc-plan.csv");
        let (current, moved) = support::demo_plan_and_moved();
        std::fs::write(&plan, current).unwrap();
        let settle = settle_s.map_or_else(String::new, |s| {
            format!("\n[resolve]\nreload_settle_s = {s}\n")
        });
        let body = format!(
            "\n[pull]\ninterval_s = 1\nmax_pages_per_round = 1000\n{}{settle}{}{extra}",
            lab.collector_toml(&format!("dmz-{node}"), ""),
            demo_sources_toml(&plan, "demo"),
        );
        let config = dir.path().join("sync.toml");
        std::fs::write(&config, body).unwrap();
        let db = TestDb::sqlite(&dir.path().join("sync.sqlite3"));
        let cli = SyncCli::new(&config, &db.url, &dir.path().join("logs"));
        let daemon = cli.spawn(&["run"]);
        wait_for_verdict(&cli, &daemon, "compliant").await;
        Running {
            lab,
            case,
            dir,
            plan,
            moved,
            cli,
            daemon,
        }
    }

    /// Moves the line's egress block to Changsha, Hunan.
    fn move_plan(&self) {
        replace(&self.plan, &self.moved);
    }

    /// Sends the line's report again (a new report id) and waits for the
    /// verdict the moved plan gives it.
    async fn judged_with_the_moved_plan(&self) {
        self.send_again().await;
        wait_for_verdict(&self.cli, &self.daemon, "violating_ip").await;
    }

    /// Sends the line's report again, with a new report id.
    async fn send_again(&self) {
        let mut again = self.case.clone();
        again.report.report_id = ReportId::new_v7();
        self.lab.post_cases(std::slice::from_ref(&again)).await;
    }

    /// The line's current verdict and how many reports it counts.
    async fn line_now(&self) -> Option<(String, u64)> {
        let out = self.cli.run(&["verdicts", "--format", "json"]).await;
        let rows = out.json();
        let row = rows.as_array()?.iter().find(|r| r["line"] == LINE)?;
        Some((
            row["verdict"].as_str()?.to_owned(),
            row["reports"].as_u64()?,
        ))
    }

    async fn stop(mut self) {
        self.daemon.signal("-TERM");
        let out = self.daemon.wait(Duration::from_secs(15)).await;
        assert_eq!(out.code(), Some(0), "{out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_judges_new_reports_with_changed_address_data() {
    bounded(TEST_BOUND, "source reload", async {
        let running = Running::start("reload", "").await;
        running.move_plan();
        // Once the change has settled, the next report of the line is
        // judged with it.
        tokio::time::sleep(Duration::from_secs(3)).await;
        running.judged_with_the_moved_plan().await;
        assert!(
            running.daemon.stderr().contains("address data changed"),
            "{}",
            running.daemon.stderr()
        );
        running.stop().await;
    })
    .await;
}

/// A report the daemon judges while the changed files settle is judged with
/// the data in use (the files may still be being written), and once the
/// new data is loaded it is judged again with it: no new report and no
/// `reprocess` are needed for the line to show the new data's verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_judged_while_the_data_changed_are_judged_again_with_it() {
    bounded(TEST_BOUND, "judged while the data changed", async {
        // Long enough to see the second report judged before the reload.
        let settle = Duration::from_secs(8);
        let running = Running::start_with("settling", Some(settle.as_secs()), "").await;
        running.move_plan();
        let changed = Instant::now();
        running.send_again().await;
        loop {
            let now = running.line_now().await;
            if now == Some(("compliant".to_owned(), 2)) {
                break;
            }
            assert!(
                changed.elapsed() < settle,
                "the second report was not judged while the change settled: {now:?}\n{}",
                running.daemon.stderr()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            changed.elapsed() < settle,
            "judged only after the change settled: the test says nothing"
        );
        wait_for_verdict(&running.cli, &running.daemon, "violating_ip").await;
        assert_eq!(
            running.line_now().await,
            Some(("violating_ip".to_owned(), 2)),
            "judged again, not counted again"
        );
        assert!(
            running
                .daemon
                .stderr()
                .contains("judged again with the new data"),
            "{}",
            running.daemon.stderr()
        );
        running.stop().await;
    })
    .await;
}

/// A lookup service on loopback that answers `{}` (it knows nothing) and,
/// before its first answer, replaces `plan` with `moved`: the address data
/// changes while the run that asked it is judging.
async fn changing_lookup_service(plan: PathBuf, moved: String) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut replaced = false;
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            if !replaced {
                replace(&plan, &moved);
                replaced = true;
            }
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                          content-length: 2\r\nconnection: close\r\n\r\n{}",
                    )
                    .await;
            });
        }
    });
    addr
}

/// A one-off `pull --once` whose address data files change while its
/// pipeline runs (replaced while the run asks a lookup service) judges its
/// reports again with the new data once the change has settled, like the
/// daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_off_run_during_a_data_change_judges_its_reports_again() {
    bounded(TEST_BOUND, "one-off run during a change", async {
        let lab = Lab::start("one-off", false, 50).await;
        lab.post_cases(&[moved_line_case()]).await;
        let dir = tempfile::tempdir().unwrap();
        let plan = dir.path().join("cmcc-plan.csv");
        let (current, moved) = support::demo_plan_and_moved();
        std::fs::write(&plan, current).unwrap();
        let lookup = changing_lookup_service(plan.clone(), moved).await;
        // The lookup service first, so that the run asks it.
        let body = format!(
            "\n[pipeline]\nsource_retry_minutes = 0\n\n[resolve]\nreload_settle_s = 1\n\n\
             [[resolve.source]]\nkind = \"http\"\nname = \"lookup\"\n\
             url = \"http://{lookup}/{{ip}}\"\ntimeout_ms = 5000\nfields = {{ carrier = \"/isp\" }}\n\
             {}{}",
            demo_sources_toml(&plan, "demo"),
            lab.collector_toml("dmz-one-off", ""),
        );
        let config = dir.path().join("sync.toml");
        std::fs::write(&config, body).unwrap();
        let db = TestDb::sqlite(&dir.path().join("sync.sqlite3"));
        let cli = SyncCli::new(&config, &db.url, &dir.path().join("logs"));
        let out = cli.ok(&["pull", "--once"]).await;
        assert!(
            out.stderr.contains("judging them again"),
            "the change was not noticed: {out:?}"
        );
        let rows = cli.ok(&["verdicts", "--format", "json"]).await.json();
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["line"] == LINE)
            .unwrap()
            .clone();
        assert_eq!(row["verdict"], "violating_ip", "{row:#}\n{out:?}");
        assert_eq!(row["reports"], 1, "{row:#}");
    })
    .await;
}

/// `Pipeline::reprocess_ids` (what the daemon judges those reports again
/// with) judges again exactly the processed reports of its id range, with
/// the pipeline's data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_range_is_judged_again_with_new_data_on_both_backends() {
    bounded(TEST_BOUND, "reprocess ids", async {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Arc::new(Catalog::embedded().unwrap());
        let (current, moved) = support::demo_plan_and_moved();
        let pipeline_with = |text: &str, version: &str| {
            let plan = dir.path().join(format!("plan-{version}.csv"));
            std::fs::write(&plan, text).unwrap();
            let toml =
                demo_sources_toml(&plan, version).replace("[[resolve.source]]", "[[source]]");
            let chain = ChainConfig::from_toml("test", &toml)
                .unwrap()
                .build(dir.path(), &catalog)
                .unwrap();
            Pipeline::new(
                Arc::clone(&catalog),
                Arc::new(chain),
                Classifier::new(&ClassifierConfig::default()).unwrap(),
            )
        };
        let old = pipeline_with(&current, "old");
        let new = pipeline_with(&moved, "new");
        let case = moved_line_case();
        let egress = case.egress.unwrap().to_string();
        let template = serde_json::to_value(&case.report).unwrap();
        // Four lines on the moved block, a report each.
        let accounts: Vec<String> = (1..=4).map(|i| format!("075526609{i:02}")).collect();
        let reports: Vec<_> = (1..=4u8)
            .map(|i| {
                let account = accounts[usize::from(i) - 1].clone();
                support::pulled_report(&template, i, "n1", &egress, chrono::Utc::now(), |doc| {
                    doc["account"] = serde_json::json!(account);
                    doc["install_id"] = serde_json::json!(format!("SZ-NS-9001{i:02}"));
                })
            })
            .collect();
        // The four lines' current verdicts, in order.
        let verdicts = |store: &lineprobe_sync::Store| {
            let store = store.clone();
            let keys: Vec<String> = accounts
                .iter()
                .map(|a| lineprobe_sync::line_key(a, ""))
                .collect();
            async move {
                let mut out = Vec::new();
                for key in keys {
                    out.push(store.line(&key).await.unwrap().unwrap().verdict);
                }
                out
            }
        };
        let range = |first: i64, last: i64| RawIdRange { first, last };
        for db in support::backends("reprocess_ids", dir.path()).await {
            let store = db.store().await;
            let label = db.label();
            support::commit_pulled(&store, "c1", "n1", &reports).await;
            let ids: Vec<i64> = store
                .pending_raw(0, 10)
                .await
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect();
            assert_eq!(ids.len(), 4, "{label}");
            let run = old.run_pending(&store, 100, |_| {}).await.unwrap();
            assert_eq!(run.raw_ids, Some(range(ids[0], ids[3])), "{label}");
            assert_eq!(verdicts(&store).await, ["compliant"; 4], "{label}");

            let run = new
                .reprocess_ids(&store, range(ids[1], ids[2]), 100, |_| {})
                .await
                .unwrap();
            assert_eq!(run.read, 2, "{label}: {run:?}");
            assert_eq!(run.raw_ids, Some(range(ids[1], ids[2])), "{label}");
            assert_eq!(
                verdicts(&store).await,
                ["compliant", "violating_ip", "violating_ip", "compliant"],
                "{label}"
            );

            // A page at a time: the range's end is found on a later page.
            let run = new
                .reprocess_ids(&store, range(ids[0], ids[2]), 1, |_| {})
                .await
                .unwrap();
            assert_eq!(run.read, 3, "{label}: {run:?}");
            assert_eq!(run.applied.verdicts_new, 1, "{label}: {run:?}");
            assert_eq!(
                verdicts(&store).await,
                ["violating_ip", "violating_ip", "violating_ip", "compliant"],
                "{label}"
            );
            store.close().await;
        }
    })
    .await;
}

/// A database that cannot be read for a moment while the changed sources
/// are opened (the lookup services' cached answers are read for them)
/// does not leave the daemon on the old data until the files change
/// again: the reload is tried again on the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_the_database_failed_is_tried_again_with_the_files_unchanged() {
    bounded(TEST_BOUND, "source reload retry", async {
        // A lookup service (never answering; judged without it at once),
        // so that opening the sources reads its cache from the database.
        let running = Running::start(
            "reload-db",
            "\n[[resolve.source]]\nkind = \"http\"\nname = \"lookup\"\n\
             url = \"http://127.0.0.1:9/{ip}\"\ntimeout_ms = 200\n\
             fields = { carrier = \"/isp\" }\n\
             \n[pipeline]\nsource_retry_minutes = 0\n",
        )
        .await;

        // The resolver cache's table is away while the plan changes.
        let db_path = running.dir.path().join("sync.sqlite3");
        let sql = sqlx::SqlitePool::connect(&format!("sqlite://{}", db_path.display()))
            .await
            .unwrap();
        let exec = |q: &'static str| {
            let sql = sql.clone();
            async move {
                sqlx::query(q).execute(&sql).await.unwrap();
            }
        };
        exec("ALTER TABLE resolver_cache RENAME TO resolver_cache_away").await;
        running.move_plan();
        let started = Instant::now();
        while !running.daemon.stderr().contains("address data changed") {
            assert!(
                started.elapsed() < Duration::from_mins(1),
                "the change was never noticed: {}",
                running.daemon.stderr()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // The database is back; the files are as they were when the
        // reload failed.
        exec("ALTER TABLE resolver_cache_away RENAME TO resolver_cache").await;
        sql.close().await;
        running.judged_with_the_moved_plan().await;
        running.stop().await;
    })
    .await;
}
