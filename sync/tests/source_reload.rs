//! The daemon (`lineprobe-sync run`) opens the address sources again when
//! their data files change, so reports arriving afterwards are judged with
//! the new data without a restart. Through the real binary, on SQLite (the
//! reload does not depend on the database).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lineprobe_shared::ReportId;
use lineprobe_sync::{DemoCase, demo_cases};
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
        let lab = Lab::start(node, false, 50).await;
        let case = moved_line_case();
        lab.post_cases(std::slice::from_ref(&case)).await;
        let dir = tempfile::tempdir().unwrap();
        let plan = dir.path().join("cmcc-plan.csv");
        let (current, moved) = support::demo_plan_and_moved();
        std::fs::write(&plan, current).unwrap();
        let body = format!(
            "\n[pull]\ninterval_s = 1\nmax_pages_per_round = 1000\n{}{}{extra}",
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
        let mut again = self.case.clone();
        again.report.report_id = ReportId::new_v7();
        self.lab.post_cases(std::slice::from_ref(&again)).await;
        wait_for_verdict(&self.cli, &self.daemon, "violating_ip").await;
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
