//! The daemon (`lineprobe-sync run`) opens the address sources again when
//! their data files change, so reports arriving afterwards are judged with
//! the new data without a restart. Through the real binary, on SQLite (the
//! reload does not depend on the database).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use lineprobe_shared::ReportId;
use lineprobe_sync::{DemoCase, demo_cases};
use support::{Lab, Proc, SyncCli, TestDb, bounded, demo_data_dir, demo_sources_toml};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_judges_new_reports_with_changed_address_data() {
    bounded(TEST_BOUND, "source reload", async {
        let lab = Lab::start("reload-node", false, 50).await;
        let case = moved_line_case();
        lab.post_cases(std::slice::from_ref(&case)).await;

        let dir = tempfile::tempdir().unwrap();
        let plan = dir.path().join("cmcc-plan.csv");
        let v1 = std::fs::read_to_string(demo_data_dir().join("ipplan.csv")).unwrap();
        std::fs::write(&plan, &v1).unwrap();
        let body = format!(
            "\n[pull]\ninterval_s = 1\nmax_pages_per_round = 1000\n{}{}",
            lab.collector_toml("dmz-reload", ""),
            demo_sources_toml(&plan, "demo"),
        );
        let config = dir.path().join("sync.toml");
        std::fs::write(&config, body).unwrap();
        let db = TestDb::sqlite(&dir.path().join("sync.sqlite3"));
        let cli = SyncCli::new(&config, &db.url, &dir.path().join("logs"));
        let mut daemon = cli.spawn(&["run"]);
        wait_for_verdict(&cli, &daemon, "compliant").await;

        // The plan moves the line's egress block to Changsha, Hunan.
        let old = "120.229.0.0/16,中国移动,广东,深圳,家宽,";
        assert!(v1.contains(old), "the demo plan changed; update this test");
        replace(
            &plan,
            &v1.replace(old, "120.229.0.0/16,中国移动,湖南,长沙,家宽,"),
        );
        // Once the change has settled, the next report of the line is
        // judged with it.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut again = case.clone();
        again.report.report_id = ReportId::new_v7();
        lab.post_cases(std::slice::from_ref(&again)).await;
        wait_for_verdict(&cli, &daemon, "violating_ip").await;
        assert!(
            daemon.stderr().contains("address data changed"),
            "{}",
            daemon.stderr()
        );

        daemon.signal("-TERM");
        let out = daemon.wait(Duration::from_secs(15)).await;
        assert_eq!(out.code(), Some(0), "{out:?}");
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
        let lab = Lab::start("reload-db-node", false, 50).await;
        let case = moved_line_case();
        lab.post_cases(std::slice::from_ref(&case)).await;

        let dir = tempfile::tempdir().unwrap();
        let plan = dir.path().join("cmcc-plan.csv");
        let v1 = std::fs::read_to_string(demo_data_dir().join("ipplan.csv")).unwrap();
        std::fs::write(&plan, &v1).unwrap();
        // A lookup service (never answering; judged without it at once),
        // so that opening the sources reads its cache from the database.
        let body = format!(
            "\n[pipeline]\nsource_retry_minutes = 0\n\
             \n[pull]\ninterval_s = 1\nmax_pages_per_round = 1000\n{}{}\
             \n[[resolve.source]]\nkind = \"http\"\nname = \"lookup\"\n\
             url = \"http://127.0.0.1:9/{{ip}}\"\ntimeout_ms = 200\n\
             fields = {{ carrier = \"/isp\" }}\n",
            lab.collector_toml("dmz-reload-db", ""),
            demo_sources_toml(&plan, "demo"),
        );
        let config = dir.path().join("sync.toml");
        std::fs::write(&config, body).unwrap();
        let db_path = dir.path().join("sync.sqlite3");
        let db = TestDb::sqlite(&db_path);
        let cli = SyncCli::new(&config, &db.url, &dir.path().join("logs"));
        let mut daemon = cli.spawn(&["run"]);
        wait_for_verdict(&cli, &daemon, "compliant").await;

        // The resolver cache's table is away while the plan changes.
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
        let old = "120.229.0.0/16,中国移动,广东,深圳,家宽,";
        assert!(v1.contains(old), "the demo plan changed; update this test");
        replace(
            &plan,
            &v1.replace(old, "120.229.0.0/16,中国移动,湖南,长沙,家宽,"),
        );
        let started = Instant::now();
        while !daemon.stderr().contains("address data changed") {
            assert!(
                started.elapsed() < Duration::from_mins(1),
                "the change was never noticed: {}",
                daemon.stderr()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // The database is back; the files are as they were when the
        // reload failed.
        exec("ALTER TABLE resolver_cache_away RENAME TO resolver_cache").await;
        sql.close().await;
        let mut again = case.clone();
        again.report.report_id = ReportId::new_v7();
        lab.post_cases(std::slice::from_ref(&again)).await;
        wait_for_verdict(&cli, &daemon, "violating_ip").await;

        daemon.signal("-TERM");
        let out = daemon.wait(Duration::from_secs(15)).await;
        assert_eq!(out.code(), Some(0), "{out:?}");
    })
    .await;
}
