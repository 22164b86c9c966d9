//! Batch compliance reports over a seeded database, on both backends: every
//! test runs against a fresh SQLite file and, when `LINEPROBE_TEST_PG` names
//! a PostgreSQL server, against a fresh PostgreSQL database created for the
//! test and dropped after it (skipped with a printed reason otherwise, a
//! failure under `LINEPROBE_REQUIRE_LAB=1`).
//!
//! The seed drives the real pipeline: the demo's reports, each given a
//! receiver envelope with a chosen `received_at`, are committed as a pull
//! and processed with the demo address data, over three days in UTC+08:00:
//!
//! | day | reports |
//! | --- | --- |
//! | 2026-11-20 | every demo case once (10 lines: 6 compliant, 1 non-compliant, 1 violating IP, 1 proxy-suspected, 1 indeterminate; 1 quarantined, `incomplete`) |
//! | 2026-11-21 | gd-mobile 09:00 (compliant), bj-unicom 10:00, other-province 11:00, urban-village 12:00, a body that is not JSON (pulled 14:00, no envelope), gd-mobile 15:00 over the urban village's route (non-compliant) |
//! | 2026-11-22 | gd-mobile 08:00 back on its own route (compliant), unknown 09:00, incomplete 10:00 |
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDate};
use lineprobe_shared::{Catalog, Classifier, ClassifierConfig};
use lineprobe_sync::{
    FileOutcome, Period, PeriodFigures, PeriodKind, Pipeline, Progress, PullBatch, PulledReport,
    ReportFormat, ReportScheduler, ReportSettings, Store, SyncConfig, demo_cases, demo_chain,
    period_figures, periods_to_catch_up, write_reports,
};
use serde_json::{Value, json};

mod pgscratch;
use pgscratch::ScratchPg;

// ---- backends --------------------------------------------------------------

/// What a test body gets.
#[derive(Clone)]
struct Ctx {
    store: Store,
    url: String,
    backend: &'static str,
}

/// Runs `body` against a fresh SQLite database and a fresh PostgreSQL one;
/// returns what each run returned.
async fn on_each_backend<F, Fut, T>(test: &str, body: F) -> Vec<T>
where
    F: Fn(Ctx) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut out = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("sync.sqlite3").display());
    let store = Store::open(&url).await.unwrap();
    let result = run_isolated(body(Ctx {
        store: store.clone(),
        url,
        backend: "sqlite",
    }))
    .await;
    store.close().await;
    match result {
        Ok(value) => out.push(value),
        Err(panic) => {
            eprintln!("{test} failed on SQLite");
            std::panic::resume_unwind(panic);
        }
    }

    let Some(pg) = ScratchPg::create(test, "report").await else {
        return out;
    };
    let store = Store::open(&pg.url).await.unwrap();
    let result = run_isolated(body(Ctx {
        store: store.clone(),
        url: pg.url.clone(),
        backend: "postgres",
    }))
    .await;
    store.close().await;
    pg.drop_database().await.unwrap();
    match result {
        Ok(value) => out.push(value),
        Err(panic) => {
            eprintln!("{test} failed on PostgreSQL");
            std::panic::resume_unwind(panic);
        }
    }
    out
}

async fn run_isolated<T: Send + 'static>(
    body: impl Future<Output = T> + Send + 'static,
) -> Result<T, Box<dyn std::any::Any + Send>> {
    match tokio::time::timeout(Duration::from_mins(3), tokio::spawn(body)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(join)) => Err(join
            .try_into_panic()
            .unwrap_or_else(|e| Box::new(e.to_string()))),
        Err(_) => Err(Box::new("the test body took more than 180 s".to_owned())),
    }
}

// ---- the seed --------------------------------------------------------------

const NODE: &str = "node-a";
const COLLECTOR: &str = "dmz-1";

fn cst() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).unwrap()
}

/// `2026-11-21 15:00` in UTC+08:00.
fn at(day: u32, hour: u32, minute: u32) -> DateTime<FixedOffset> {
    NaiveDate::from_ymd_opt(2026, 11, day)
        .unwrap()
        .and_hms_opt(hour, minute, 0)
        .unwrap()
        .and_local_timezone(cst())
        .unwrap()
}

fn day(d: u32) -> Period {
    Period::containing(
        PeriodKind::Day,
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap(),
    )
}

/// The demo case `label` as the probe sent it on `day` (JSON), with its
/// egress address.
fn case(label: &str, day: u32) -> (Value, String) {
    let cases = demo_cases(at(day, 12, 0)).unwrap();
    let case = cases.iter().find(|c| c.label == label).unwrap();
    let doc: Value = serde_json::from_slice(&case.report.to_json().unwrap()).unwrap();
    (doc, case.egress.unwrap().to_string())
}

/// The report as the collector stored it: with the receiver's envelope.
fn stored(mut doc: Value, egress: &str, received: DateTime<FixedOffset>, seq: u64) -> PulledReport {
    doc["envelope"] = json!({
        "received_at": received.to_utc().to_rfc3339(),
        "peer_ip": egress,
        "path": "/api/v1/report",
        "node_id": NODE,
        "seq": seq,
    });
    PulledReport {
        seq,
        report_id: doc["report_id"].as_str().map(str::to_owned),
        received_at_ms: Some(received.timestamp_millis()),
        body: serde_json::to_vec(&doc).unwrap(),
    }
}

/// Commits one pull and runs the pipeline over it.
async fn pull_and_process(
    store: &Store,
    reports: &[PulledReport],
    pulled_at: DateTime<FixedOffset>,
) {
    pull(store, reports, pulled_at).await;
    assert_eq!(process(store).await, reports.len() as u64);
}

/// Commits one pull (its reports left pending).
async fn pull(store: &Store, reports: &[PulledReport], pulled_at: DateTime<FixedOffset>) {
    let next_after = reports.iter().map(|r| r.seq).max().unwrap();
    store
        .commit_pull(&PullBatch {
            collector: COLLECTOR,
            node_id: NODE,
            reports,
            next_after,
            pulled_at_ms: pulled_at.timestamp_millis(),
        })
        .await
        .unwrap();
}

/// Runs the pipeline over the pending reports; how many it read.
async fn process(store: &Store) -> u64 {
    let catalog = Arc::new(Catalog::embedded().unwrap());
    let chain = Arc::new(demo_chain(&catalog).unwrap());
    let pipeline = Pipeline::new(
        catalog,
        chain,
        Classifier::new(&ClassifierConfig::default()).unwrap(),
    )
    .with_workers(2);
    pipeline.run_pending(store, 100, |_| {}).await.unwrap().read
}

/// The three days of the seed (see the module comment).
async fn seed(store: &Store) {
    let mut seq = 0;
    let mut next = || {
        seq += 1;
        seq
    };
    // Day 1: every demo case, ten minutes apart from 09:00.
    let labels: Vec<&str> = demo_cases(at(20, 12, 0))
        .unwrap()
        .iter()
        .map(|c| c.label)
        .collect();
    let day1: Vec<PulledReport> = labels
        .iter()
        .enumerate()
        .map(|(i, label)| {
            let (doc, egress) = case(label, 20);
            let minutes = u32::try_from(i).unwrap() * 10;
            stored(doc, &egress, at(20, 9 + minutes / 60, minutes % 60), next())
        })
        .collect();
    pull_and_process(store, &day1, at(20, 23, 0)).await;

    // Day 2.
    let (gd, gd_egress) = case("gd-mobile", 21);
    let (urban, urban_egress) = case("urban-village", 21);
    let mut gd_moved = gd.clone();
    gd_moved["trace"] = urban["trace"].clone();
    // Another report of the line, not a copy of the first: its own id.
    gd_moved["report_id"] = json!(lineprobe_shared::ReportId::new_v7().to_string());
    let (bj, bj_egress) = case("bj-unicom", 21);
    let (other, other_egress) = case("other-province", 21);
    let day2 = vec![
        stored(gd, &gd_egress, at(21, 9, 0), next()),
        stored(bj, &bj_egress, at(21, 10, 0), next()),
        stored(other, &other_egress, at(21, 11, 0), next()),
        stored(urban, &urban_egress, at(21, 12, 0), next()),
    ];
    pull_and_process(store, &day2, at(21, 13, 0)).await;
    // A body that is not JSON: no envelope, so it belongs to its pull time.
    let garbage = vec![PulledReport {
        seq: next(),
        report_id: None,
        received_at_ms: None,
        body: b"{\"schema\":1,\"report_id\":".to_vec(),
    }];
    pull_and_process(store, &garbage, at(21, 14, 0)).await;
    let moved = vec![stored(gd_moved, &urban_egress, at(21, 15, 0), next())];
    pull_and_process(store, &moved, at(21, 16, 0)).await;

    // Day 3: gd-mobile back on its own route.
    let (gd, gd_egress) = case("gd-mobile", 22);
    let (unknown, unknown_egress) = case("unknown", 22);
    let (incomplete, incomplete_egress) = case("incomplete", 22);
    let day3 = vec![
        stored(gd, &gd_egress, at(22, 8, 0), next()),
        stored(unknown, &unknown_egress, at(22, 9, 0), next()),
        stored(incomplete, &incomplete_egress, at(22, 10, 0), next()),
    ];
    pull_and_process(store, &day3, at(22, 23, 0)).await;
}

fn settings(dir: &Path, formats: &[ReportFormat]) -> ReportSettings {
    ReportSettings {
        out_dir: dir.to_path_buf(),
        formats: formats.to_vec(),
        offset: cst(),
        collectors: Vec::new(),
    }
}

const ALL: [ReportFormat; 4] = [
    ReportFormat::Csv,
    ReportFormat::Json,
    ReportFormat::Html,
    ReportFormat::Xlsx,
];

async fn figures(store: &Store, period: Period) -> PeriodFigures {
    let catalog = Catalog::embedded().unwrap();
    period_figures(store, &catalog, period, cst())
        .await
        .unwrap()
}

fn group<'a>(groups: &'a Value, id: &str) -> &'a Value {
    groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == id)
        .unwrap_or_else(|| panic!("no group {id} in {groups:#}"))
}

// ---- the figures -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_figures_of_a_seeded_day_are_right() {
    let documents = on_each_backend("the_figures_of_a_seeded_day_are_right", |ctx| async move {
        seed(&ctx.store).await;
        let f = serde_json::to_value(figures(&ctx.store, day(21)).await).unwrap();
        check_totals(&f);
        check_groups(&f);
        check_listed_lines(&f);
        check_quarantine_activity_and_trend(&f);
        check_later_periods(&ctx.store).await;
        (ctx.backend, f)
    })
    .await;
    // Both backends give the same figures, to the byte.
    if let [(_, sqlite), (backend, postgres)] = documents.as_slice() {
        assert_eq!(*backend, "postgres");
        assert_eq!(
            serde_json::to_string(sqlite).unwrap(),
            serde_json::to_string(postgres).unwrap(),
            "SQLite and PostgreSQL disagree"
        );
    } else {
        assert_eq!(documents.len(), 1, "SQLite only, PostgreSQL skipped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_from_low_trust_sources_are_listed_apart() {
    on_each_backend("low_trust_listed_apart", |ctx| async move {
        // The same non-compliant line twice over: once as the collector
        // trusted it, once (another account) from a flooding source.
        let (trusted, egress) = case("gd-mobile", 21);
        let (mut flooded, _) = case("gd-mobile", 21);
        flooded["account"] = json!("07550000999");
        flooded["install_id"] = json!("SZ-NS-000999");
        flooded["report_id"] = json!(lineprobe_shared::ReportId::new_v7().to_string());
        let mut flooded = stored(flooded, &egress, at(21, 10, 0), 2);
        let mut doc: Value = serde_json::from_slice(&flooded.body).unwrap();
        doc["envelope"]["trust"] = json!({
            "score": 18, "install": 18, "prefix": 30, "signature": "unsigned",
            "reasons": ["anomaly_episode", "unsigned"],
        });
        flooded.body = serde_json::to_vec(&doc).unwrap();
        // Moved onto another carrier's route, so both are non-compliant.
        let (urban, urban_egress) = case("urban-village", 21);
        let mut moved = trusted.clone();
        moved["trace"] = urban["trace"].clone();
        let mut flooded_doc: Value = serde_json::from_slice(&flooded.body).unwrap();
        flooded_doc["trace"] = urban["trace"].clone();
        flooded_doc["envelope"]["peer_ip"] = json!(urban_egress);
        flooded.body = serde_json::to_vec(&flooded_doc).unwrap();
        let reports = vec![stored(moved, &urban_egress, at(21, 9, 0), 1), flooded];
        pull_and_process(&ctx.store, &reports, at(21, 11, 0)).await;

        let f = serde_json::to_value(figures(&ctx.store, day(21)).await).unwrap();
        let lines = |key: &str| -> Vec<(String, String, bool)> {
            f[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    (
                        l["line"].as_str().unwrap().to_owned(),
                        l["verdict"].as_str().unwrap().to_owned(),
                        l["low_trust"].as_bool().unwrap(),
                    )
                })
                .collect()
        };
        assert_eq!(
            lines("listed_lines"),
            [(
                "account:07552660101".to_owned(),
                "non_compliant".to_owned(),
                false
            )]
        );
        assert_eq!(
            lines("low_trust_lines"),
            [(
                "account:07550000999".to_owned(),
                "non_compliant".to_owned(),
                true
            )]
        );
        // Not hidden: both lines count in the figures.
        assert_eq!(f["summary"]["lines_observed"], 2, "{:#}", f["summary"]);
        assert_eq!(f["summary"]["verdicts"]["non_compliant"], 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_older_report_does_not_decide_the_lines_verdict_for_the_day() {
    on_each_backend("late_older_report", |ctx| async move {
        // The line reported at 10:00 (trusted); a report it made at 09:00
        // arrives in a later pull, from a source flagged low-trust (its
        // verdict differs by that only). The day's verdict is the 10:00 one.
        // (Moved onto another carrier's route: non-compliant, so listed.)
        let (mut trusted, _) = case("gd-mobile", 21);
        let (urban, egress) = case("urban-village", 21);
        trusted["trace"] = urban["trace"].clone();
        let mut late = trusted.clone();
        late["report_id"] = json!(lineprobe_shared::ReportId::new_v7().to_string());
        pull_and_process(
            &ctx.store,
            &[stored(trusted, &egress, at(21, 10, 0), 1)],
            at(21, 10, 5),
        )
        .await;
        let mut late = stored(late, &egress, at(21, 9, 0), 2);
        let mut doc: Value = serde_json::from_slice(&late.body).unwrap();
        doc["envelope"]["trust"] = json!({
            "score": 18, "install": 18, "prefix": 30, "signature": "unsigned",
            "reasons": ["anomaly_episode", "unsigned"],
        });
        late.body = serde_json::to_vec(&doc).unwrap();
        pull_and_process(&ctx.store, &[late], at(21, 11, 0)).await;

        let f = serde_json::to_value(figures(&ctx.store, day(21)).await).unwrap();
        assert_eq!(f["summary"]["lines_observed"], 1, "{:#}", f["summary"]);
        let low: Vec<&Value> = f["low_trust_lines"].as_array().unwrap().iter().collect();
        assert!(
            low.is_empty(),
            "the late 09:00 report decided the day: {low:#?}"
        );
        let listed: Vec<&Value> = f["listed_lines"].as_array().unwrap().iter().collect();
        assert_eq!(listed.len(), 1, "{listed:#?}");
        assert_eq!(listed[0]["verdict"], "non_compliant");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_that_look_like_formulas_are_defused_in_every_csv() {
    on_each_backend("formulas_defused", |ctx| async move {
        // A line moved onto another carrier's route (so it is listed), from
        // a probe whose subscriber-typed account and agent version are
        // spreadsheet formulas: both are valid report text.
        const ACCOUNT: &str = "=HYPERLINK(\"http://198.51.100.1/\",\"open\")";
        const VERSION: &str = "@SUM(1+1)";
        const CITY: &str = "-1+cmd|' /C calc'!A0";
        let (mut doc, _) = case("gd-mobile", 21);
        let (urban, urban_egress) = case("urban-village", 21);
        doc["trace"] = urban["trace"].clone();
        doc["account"] = json!(ACCOUNT);
        doc["device"]["agent_version"] = json!(VERSION);
        doc["declared"]["city"] = json!(CITY);
        let reports = vec![stored(doc, &urban_egress, at(21, 9, 0), 1)];
        pull_and_process(&ctx.store, &reports, at(21, 11, 0)).await;

        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::embedded().unwrap();
        let settings = settings(dir.path(), &[ReportFormat::Csv, ReportFormat::Xlsx]);
        write_reports(
            &ctx.store,
            &catalog,
            &settings,
            &[day(21)],
            &Progress::hidden(),
        )
        .await
        .unwrap();
        let stem = "lineprobe-report-day-2026-11-21";
        let listed = read_csv(&dir.path().join(format!("{stem}-listed-lines.csv")));
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["account"], format!("'{ACCOUNT}"));
        assert_eq!(listed[0]["line"], format!("account:{ACCOUNT}"));
        assert_eq!(listed[0]["declared_city"], format!("'{CITY}"), "{listed:?}");
        let probes = read_csv(&dir.path().join(format!("{stem}-probes.csv")));
        assert_eq!(probes[0]["agent_version"], format!("'{VERSION}"));
        // The workbook holds them as they are, as text cells, which a
        // spreadsheet never runs: no apostrophe.
        let book = std::fs::read(dir.path().join(format!("{stem}.xlsx"))).unwrap();
        let listed = xlsx_sheet(&book, "listed-lines");
        let column = |name: &str| listed[0].iter().position(|c| c == name).unwrap();
        let text = |s: &str| calamine::Data::String(s.to_owned());
        assert_eq!(listed[1][column("account")], text(ACCOUNT));
        assert_eq!(listed[1][column("declared_city")], text(CITY));
        let probes = xlsx_sheet(&book, "probes");
        let version = probes[0].iter().position(|c| c == "agent_version").unwrap();
        assert_eq!(probes[1][version], text(VERSION));
        // No cell of any table starts like a formula; the program's own
        // numbers (a negative change among them) stay numbers.
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "xlsx") {
                continue;
            }
            for row in read_csv(&path) {
                for (column, cell) in &row {
                    let number = cell.parse::<f64>().is_ok();
                    assert!(
                        number || !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                        "{}: {column} = {cell:?}",
                        path.display()
                    );
                }
            }
        }

        // `verdicts --format csv` too.
        let (code, stdout, stderr) = lineprobe_sync(&[
            "--database",
            ctx.url.as_str(),
            "verdicts",
            "--format",
            "csv",
        ]);
        assert_eq!(code, 0, "{stderr}");
        let mut reader = csv::Reader::from_reader(stdout.as_bytes());
        let headers = reader.headers().unwrap().clone();
        let city = headers.iter().position(|h| h == "declared_city").unwrap();
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 1);
        assert_eq!(&rows[0][city], format!("'{CITY}"));
    })
    .await;
}

/// 2026-11-21 against 2026-11-20: the totals, the previous day's, the change.
fn check_totals(f: &Value) {
    assert_eq!(f["report"], "lineprobe-compliance-report");
    assert_eq!(f["period"]["label"], "2026-11-21");
    assert_eq!(f["period"]["start"], "2026-11-21T00:00:00+08:00");
    assert_eq!(f["period"]["end"], "2026-11-22T00:00:00+08:00");
    assert_eq!(f["period"]["previous_label"], "2026-11-20");
    assert!(
        f["definitions"]["compliance_rate"]
            .as_str()
            .unwrap()
            .contains("compliant / judged")
    );

    // The day: gd-mobile (its last report, 15:00, is non-compliant),
    // urban-village, other-province, bj-unicom.
    let s = &f["summary"];
    assert_eq!(s["lines_observed"], 4);
    assert_eq!(
        s["verdicts"],
        json!({"compliant": 1, "non_compliant": 2, "violating_ip": 1,
               "proxy_suspected": 0, "indeterminate": 0})
    );
    assert_eq!(s["judged"], 4);
    assert_eq!(s["compliance_rate"], 0.25);
    assert_eq!(s["reports_received"], 6);
    assert_eq!(s["reports_processed"], 5);
    assert_eq!(s["reports_quarantined"], 1);
    assert_eq!(s["reports_pending"], 0);
    assert_eq!(s["installs"], 4);

    // The day before: every demo line once.
    let p = &f["previous"];
    assert_eq!(p["period"], "2026-11-20");
    assert_eq!(p["lines_observed"], 10);
    assert_eq!(
        p["verdicts"],
        json!({"compliant": 6, "non_compliant": 1, "violating_ip": 1,
               "proxy_suspected": 1, "indeterminate": 1})
    );
    assert_eq!(p["compliance_rate"], 0.6667);
    assert_eq!(p["reports_received"], 11);
    assert_eq!(p["installs"], 11);
    assert_eq!(
        f["change"],
        json!({
            "lines_observed": -6,
            "verdicts": {"compliant": -5, "non_compliant": 1, "violating_ip": 0,
                         "proxy_suspected": -1, "indeterminate": -1},
            "judged": -5,
            "compliance_rate": -0.4167,
            "reports_received": -5,
            "reports_quarantined": 0,
            "installs": -7,
        })
    );
}

/// 2026-11-21 by carrier, province and city.
fn check_groups(f: &Value) {
    // By carrier: most lines first; carriers seen only the day before
    // stay, with no line now.
    let carriers: Vec<&str> = f["by_carrier"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        carriers,
        ["china_mobile", "china_unicom", "china_telecom", "drpeng"]
    );
    let mobile = group(&f["by_carrier"], "china_mobile");
    assert_eq!(mobile["name_zh"], "中国移动");
    assert_eq!(mobile["name_en"], "China Mobile");
    assert_eq!(mobile["lines_observed"], 3);
    assert_eq!(mobile["compliance_rate"], 0.0);
    assert_eq!(mobile["previous_lines_observed"], 4);
    assert_eq!(mobile["previous_compliance_rate"], 0.5);
    assert_eq!(mobile["compliance_rate_change"], -0.5);
    let telecom = group(&f["by_carrier"], "china_telecom");
    assert_eq!(telecom["lines_observed"], 0);
    assert_eq!(telecom["compliance_rate"], Value::Null);
    assert_eq!(telecom["previous_compliance_rate"], 0.6667);
    assert_eq!(telecom["compliance_rate_change"], Value::Null);
    let unicom = group(&f["by_carrier"], "china_unicom");
    assert_eq!(
        (
            &unicom["compliance_rate"],
            &unicom["compliance_rate_change"]
        ),
        (&json!(1.0), &json!(0.0))
    );

    // By province.
    let gd = group(&f["by_province"], "CN-GD");
    assert_eq!(gd["name_zh"], "广东省");
    assert_eq!(gd["lines_observed"], 2);
    assert_eq!(gd["compliance_rate"], 0.0);
    assert_eq!(gd["previous_compliance_rate"], 0.6);
    let bj = group(&f["by_province"], "CN-BJ");
    assert_eq!(bj["lines_observed"], 2);
    assert_eq!(bj["compliance_rate"], 0.5);
    assert_eq!(bj["previous_compliance_rate"], 0.6667);
    assert_eq!(bj["compliance_rate_change"], -0.1667);
    // By city: Shenzhen has both non-compliant lines.
    let shenzhen = group(&f["by_city"], "440300");
    assert_eq!(shenzhen["name_zh"], "深圳市");
    assert_eq!(shenzhen["province"], "CN-GD");
    assert_eq!(shenzhen["verdicts"]["non_compliant"], 2);

    // Sold as China Mobile, running over China Telecom.
    assert_eq!(
        f["carrier_mismatches"],
        json!([{
            "declared": {"id": "china_mobile", "name_zh": "中国移动", "name_en": "China Mobile"},
            "actual": {"id": "china_telecom", "name_zh": "中国电信", "name_en": "China Telecom"},
            "lines": 2,
        }])
    );
}

/// 2026-11-21's listed lines with their evidence.
fn check_listed_lines(f: &Value) {
    // The listed lines: non-compliant first, then violating IP.
    let listed = f["listed_lines"].as_array().unwrap();
    let keys: Vec<(&str, &str)> = listed
        .iter()
        .map(|l| (l["line"].as_str().unwrap(), l["verdict"].as_str().unwrap()))
        .collect();
    assert_eq!(
        keys,
        [
            ("account:07552660101", "non_compliant"),
            ("account:07552660505", "non_compliant"),
            ("account:01062880707", "violating_ip"),
        ]
    );
    let moved = &listed[0];
    assert_eq!(moved["install_id"], "SZ-NS-000101");
    assert_eq!(moved["reports"], 2);
    assert_eq!(moved["last_report"], "2026-11-21T15:00:00+08:00");
    assert_eq!(moved["declared"]["carrier"]["id"], "china_mobile");
    assert_eq!(moved["actual"]["carrier"]["id"], "china_telecom");
    assert_eq!(moved["egress_ip"], "113.116.44.8");
    assert_eq!(moved["first_hop_ip"], "113.116.32.1");
    assert_eq!(moved["first_hop_carrier"]["name_zh"], "中国电信");
    let codes: Vec<&str> = moved["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"carrier_mismatch"), "{codes:?}");
    let mismatch = moved["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == "carrier_mismatch")
        .unwrap();
    assert_eq!(mismatch["outcome"], "fail");
    assert!(!mismatch["message"].as_str().unwrap().is_empty());
    assert!(mismatch["evidence"].is_object(), "{mismatch:#}");
    let violating = &listed[2];
    assert_eq!(violating["declared"]["province"]["id"], "CN-BJ");
    assert_eq!(violating["actual"]["province"]["id"], "CN-HN");
}

fn check_quarantine_activity_and_trend(f: &Value) {
    // Quarantine: today the body that is not JSON; the day before, the
    // incomplete report.
    assert_eq!(f["quarantine"]["reports"], 1);
    assert_eq!(f["quarantine"]["previous_reports"], 1);
    let reasons: BTreeMap<&str, (u64, u64)> = f["quarantine"]["by_reason"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["code"].as_str().unwrap(),
                (
                    r["reports"].as_u64().unwrap(),
                    r["previous_reports"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(reasons.get("not_json"), Some(&(1, 0)), "{reasons:?}");
    assert_eq!(reasons.get("incomplete"), Some(&(0, 1)), "{reasons:?}");

    // Activity.
    assert_eq!(
        f["activity"]["by_collector"],
        json!([{"collector": "dmz-1", "reports": 6, "processed": 5, "quarantined": 1,
                "pending": 0, "previous_reports": 11}])
    );
    assert_eq!(
        f["activity"]["by_probe"],
        json!([{"engine": "unprivileged", "agent_version": env!("CARGO_PKG_VERSION"),
                "reports": 5, "installs": 4}])
    );

    // The day hour by hour.
    let points = f["trend"]["points"].as_array().unwrap();
    assert_eq!(f["trend"]["bucket"], "hour");
    assert_eq!(points.len(), 24);
    assert_eq!(points[9]["start"], "2026-11-21T09:00:00+08:00");
    assert_eq!(points[9]["label"], "09:00");
    assert_eq!(
        (&points[9]["lines_observed"], &points[9]["compliance_rate"]),
        (&json!(1), &json!(1.0))
    );
    assert_eq!(points[14]["reports_received"], 1);
    assert_eq!(points[14]["lines_observed"], 0);
    assert_eq!(points[14]["compliance_rate"], Value::Null);
    assert_eq!(
        (&points[15]["judged"], &points[15]["compliance_rate"]),
        (&json!(1), &json!(0.0))
    );
    let total: u64 = points
        .iter()
        .map(|p| p["reports_received"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 6);
}

/// The 22nd, the week and the month.
async fn check_later_periods(store: &Store) {
    // The next day: gd-mobile's last report is back on its own route,
    // so its verdict for the day is the compliant one again, although
    // its newest verdict row is the non-compliant one.
    let d22 = serde_json::to_value(figures(store, day(22)).await).unwrap();
    assert_eq!(
        d22["summary"]["verdicts"],
        json!({"compliant": 1, "non_compliant": 0, "violating_ip": 0,
               "proxy_suspected": 0, "indeterminate": 1})
    );
    assert_eq!(d22["summary"]["compliance_rate"], 1.0);
    assert_eq!(d22["listed_lines"], json!([]));
    assert_eq!(d22["quarantine"]["by_reason"][0]["code"], "incomplete");

    // The week (Monday 16 to Sunday 22): every line, by its last
    // report of the week; days without reports have no rate.
    let week = Period::containing(
        PeriodKind::Week,
        NaiveDate::from_ymd_opt(2026, 11, 19).unwrap(),
    );
    let w = serde_json::to_value(figures(store, week).await).unwrap();
    assert_eq!(w["period"]["label"], "2026-W47");
    assert_eq!(w["summary"]["lines_observed"], 10);
    assert_eq!(
        w["summary"]["verdicts"],
        json!({"compliant": 6, "non_compliant": 1, "violating_ip": 1,
               "proxy_suspected": 1, "indeterminate": 1})
    );
    assert_eq!(w["summary"]["reports_received"], 20);
    assert_eq!(w["summary"]["reports_quarantined"], 3);
    assert_eq!(w["previous"]["lines_observed"], 0);
    assert_eq!(w["change"]["compliance_rate"], Value::Null);
    assert_eq!(w["change"]["lines_observed"], 10);
    let rates: Vec<&Value> = w["trend"]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["compliance_rate"])
        .collect();
    assert_eq!(
        rates,
        [
            &Value::Null,
            &Value::Null,
            &Value::Null,
            &Value::Null,
            &json!(0.6667),
            &json!(0.25),
            &json!(1.0)
        ]
    );
    assert_eq!(w["trend"]["points"][4]["label"], "11-20");

    let month = Period::containing(
        PeriodKind::Month,
        NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
    );
    let m = serde_json::to_value(figures(store, month).await).unwrap();
    assert_eq!(m["summary"], {
        let mut s = w["summary"].clone();
        s["period"] = json!("2026-11");
        s
    });
    assert_eq!(m["trend"]["points"].as_array().unwrap().len(), 30);
}

// ---- the files -------------------------------------------------------------

fn read_csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| {
            headers
                .iter()
                .map(str::to_owned)
                .zip(r.unwrap().iter().map(str::to_owned))
                .collect()
        })
        .collect()
}

fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_files_agree_and_a_second_run_is_identical() {
    on_each_backend(
        "the_files_agree_and_a_second_run_is_identical",
        |ctx| async move {
            seed(&ctx.store).await;
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("reports");
            let catalog = Catalog::embedded().unwrap();
            let settings = settings(&out, &ALL);
            let written = write_reports(
                &ctx.store,
                &catalog,
                &settings,
                &[day(21)],
                &Progress::hidden(),
            )
            .await
            .unwrap();
            assert!(
                written[0]
                    .files
                    .iter()
                    .all(|f| f.outcome == FileOutcome::Written)
            );
            let first = snapshot(&out);
            let stem = "lineprobe-report-day-2026-11-21";
            let mut expected: Vec<String> = [
                "by-carrier",
                "by-city",
                "by-province",
                "carrier-mismatches",
                "collectors",
                "listed-lines",
                "low-trust-lines",
                "probes",
                "quarantine",
                "summary",
                "trend",
            ]
            .iter()
            .map(|t| format!("{stem}-{t}.csv"))
            .collect();
            expected.push(format!("{stem}.html"));
            expected.push(format!("{stem}.json"));
            expected.push(format!("{stem}.xlsx"));
            expected.sort();
            assert_eq!(first.keys().cloned().collect::<Vec<_>>(), expected);

            check_csv_matches_json(&out, stem, &first);
            check_xlsx_matches_csv(&out, stem, &first);
            check_html(&String::from_utf8(first[&format!("{stem}.html")].clone()).unwrap());

            // A second run writes nothing new: every file is unchanged.
            let again = write_reports(
                &ctx.store,
                &catalog,
                &settings,
                &[day(21)],
                &Progress::hidden(),
            )
            .await
            .unwrap();
            assert!(
                again[0]
                    .files
                    .iter()
                    .all(|f| f.outcome == FileOutcome::Unchanged)
            );
            assert_eq!(snapshot(&out), first);
            // And written afresh elsewhere, byte for byte the same.
            let elsewhere = dir.path().join("again");
            write_reports(
                &ctx.store,
                &catalog,
                &self::settings(&elsewhere, &ALL),
                &[day(21)],
                &Progress::hidden(),
            )
            .await
            .unwrap();
            assert_eq!(snapshot(&elsewhere), first);
        },
    )
    .await;
}

/// The CSV tables carry the JSON's figures.
fn check_csv_matches_json(out: &Path, stem: &str, files: &BTreeMap<String, Vec<u8>>) {
    // JSON and CSV carry the same figures.
    let json: Value = serde_json::from_slice(&files[&format!("{stem}.json")]).unwrap();
    let summary = read_csv(&out.join(format!("{stem}-summary.csv")));
    let metric = |name: &str| {
        summary
            .iter()
            .find(|r| r["metric"] == name)
            .unwrap_or_else(|| panic!("no {name} in summary.csv"))
            .clone()
    };
    assert_eq!(metric("lines_observed")["value"], "4");
    assert_eq!(metric("lines_observed")["previous"], "10");
    assert_eq!(metric("lines_observed")["change"], "-6");
    assert_eq!(metric("compliance_rate")["value"], "0.25");
    assert_eq!(metric("compliance_rate")["change"], "-0.4167");
    for v in lineprobe_sync::VERDICTS {
        assert_eq!(
            metric(v)["value"],
            json["summary"]["verdicts"][v].to_string(),
            "{v}"
        );
        assert_eq!(
            metric(v)["change"],
            json["change"]["verdicts"][v].to_string(),
            "{v}"
        );
    }
    assert!(summary.iter().all(|r| r["period"] == "2026-11-21"));
    let carriers = read_csv(&out.join(format!("{stem}-by-carrier.csv")));
    let json_carriers = json["by_carrier"].as_array().unwrap();
    assert_eq!(carriers.len(), json_carriers.len());
    for (row, g) in carriers.iter().zip(json_carriers) {
        assert_eq!(row["id"], g["id"].as_str().unwrap());
        assert_eq!(row["name_zh"], g["name_zh"].as_str().unwrap());
        assert_eq!(row["lines_observed"], g["lines_observed"].to_string());
        let rate = g["compliance_rate"].as_f64().map(|r| r.to_string());
        assert_eq!(row["compliance_rate"], rate.unwrap_or_default());
    }
    let listed = read_csv(&out.join(format!("{stem}-listed-lines.csv")));
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0]["line"], "account:07552660101");
    assert_eq!(listed[0]["declared_carrier_name"], "中国移动");
    assert_eq!(listed[0]["actual_carrier_name"], "中国电信");
    assert_eq!(listed[0]["first_hop_ip"], "113.116.32.1");
    assert!(listed[0]["reason_codes"].contains("carrier_mismatch"));
    let evidence: Value = serde_json::from_str(&listed[0]["evidence"]).unwrap();
    assert!(evidence["carrier_mismatch"].is_object(), "{evidence:#}");
    let trend = read_csv(&out.join(format!("{stem}-trend.csv")));
    assert_eq!(trend.len(), 24);
    assert_eq!(trend[15]["compliance_rate"], "0");
    assert_eq!(trend[14]["compliance_rate"], "");
    let quarantine = read_csv(&out.join(format!("{stem}-quarantine.csv")));
    assert!(
        quarantine
            .iter()
            .any(|r| r["reason"] == "not_json" && r["reports"] == "1")
    );
}

/// The cells of the workbook's `sheet`, as calamine reads them.
fn xlsx_sheet(bytes: &[u8], sheet: &str) -> Vec<Vec<calamine::Data>> {
    use calamine::Reader as _;
    let mut book: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let range = book.worksheet_range(sheet).unwrap();
    range.rows().map(<[calamine::Data]>::to_vec).collect()
}

/// The workbook has a sheet per CSV table, the summary first, with the
/// same cells, typed: text as text (an account keeps its leading zero),
/// counts and rates as numbers.
fn check_xlsx_matches_csv(out: &Path, stem: &str, files: &BTreeMap<String, Vec<u8>>) {
    use calamine::{Data, Reader as _};
    let bytes = &files[&format!("{stem}.xlsx")];
    let book: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(bytes.clone())).unwrap();
    let sheets = book.sheet_names();
    assert_eq!(sheets[0], "summary");
    let mut tables: Vec<String> = files
        .keys()
        .filter_map(|n| n.strip_prefix(&format!("{stem}-"))?.strip_suffix(".csv"))
        .map(str::to_owned)
        .collect();
    let mut sorted_sheets = sheets.clone();
    tables.sort();
    sorted_sheets.sort();
    assert_eq!(sorted_sheets, tables);
    for table in &tables {
        let mut reader = csv::Reader::from_path(out.join(format!("{stem}-{table}.csv"))).unwrap();
        let header: Vec<String> = reader
            .headers()
            .unwrap()
            .iter()
            .map(str::to_owned)
            .collect();
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        let cells = xlsx_sheet(bytes, table);
        let got: Vec<String> = cells[0].iter().map(ToString::to_string).collect();
        assert_eq!(got, header, "{table}: header");
        assert_eq!(cells.len(), rows.len() + 1, "{table}: rows");
        for (row, csv_row) in cells[1..].iter().zip(&rows) {
            for (column, (cell, csv_cell)) in header.iter().zip(row.iter().zip(csv_row.iter())) {
                match cell {
                    Data::Float(x) => {
                        assert_eq!(csv_cell.parse::<f64>().ok(), Some(*x), "{table}.{column}");
                    }
                    Data::String(text) => assert_eq!(text, csv_cell, "{table}.{column}"),
                    Data::Empty => assert_eq!(csv_cell, "", "{table}.{column}"),
                    other => panic!("{table}.{column}: {other:?}"),
                }
            }
        }
    }
    let listed = xlsx_sheet(bytes, "listed-lines");
    let account = listed[0].iter().position(|c| c == "account").unwrap();
    assert_eq!(listed[1][account], Data::String("07552660101".to_owned()));
}

/// The HTML page: self-contained, with its charts and the catalog's
/// Chinese names.
fn check_html(html: &str) {
    // The HTML page: self-contained, with its charts and the
    // catalog's Chinese names.
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<meta charset=\"utf-8\">"));
    assert_eq!(html.matches("<svg").count(), 3, "carrier, province, trend");
    assert!(html.contains("<polyline"), "the trend line");
    for name in [
        "中国移动",
        "中国电信",
        "广东省",
        "北京市",
        "深圳市",
        "China Mobile",
    ] {
        assert!(html.contains(name), "{name}");
    }
    for external in [
        "http://", "https://", "src=", "href=", "<script", "@import", "url(",
    ] {
        assert!(!html.contains(external), "the page refers to {external}");
    }
    assert!(html.contains("carrier_mismatch"));
    assert!(html.contains("compliant / judged"), "the definitions");
}

// ---- catch-up and the schedule ---------------------------------------------

fn days_written(dir: &Path) -> Vec<String> {
    let mut days: Vec<String> = snapshot(dir)
        .keys()
        .filter_map(|n| n.strip_prefix("lineprobe-report-day-"))
        .filter_map(|rest| rest.strip_suffix(".json"))
        .map(str::to_owned)
        .collect();
    days.sort();
    days
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_fills_exactly_the_missed_periods() {
    on_each_backend("catch_up_fills_exactly_the_missed_periods", |ctx| async move {
        seed(&ctx.store).await;
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::embedded().unwrap();
        let s = settings(dir.path(), &[ReportFormat::Json, ReportFormat::Csv]);

        // Nothing written yet: only the last complete day.
        assert_eq!(periods_to_catch_up(&s, day(23)).unwrap(), [day(23)]);
        // The 20th is written; on the 24th, the 21st to the 23rd are missing.
        write_reports(&ctx.store, &catalog, &s, &[day(20)], &Progress::hidden())
            .await
            .unwrap();
        let missing = periods_to_catch_up(&s, day(23)).unwrap();
        assert_eq!(missing, [day(21), day(22), day(23)]);
        let written = write_reports(&ctx.store, &catalog, &s, &missing, &Progress::hidden())
            .await
            .unwrap();
        assert_eq!(written.len(), 3);
        assert_eq!(
            days_written(dir.path()),
            ["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23"]
        );
        // Up to date: nothing more, and nothing twice.
        assert!(periods_to_catch_up(&s, day(23)).unwrap().is_empty());
        assert!(periods_to_catch_up(&s, day(22)).unwrap().is_empty());
        // A day whose CSV is only half there (its summary missing) is not
        // written; catch-up goes on from the last complete one.
        std::fs::remove_file(dir.path().join("lineprobe-report-day-2026-11-23-summary.csv"))
            .unwrap();
        assert_eq!(periods_to_catch_up(&s, day(23)).unwrap(), [day(23)]);

        // The daemon's schedule: daily at 01:30, weekly on Mondays.
        let reports = tempfile::tempdir().unwrap();
        let toml = format!(
            "[report]\nout_dir = {:?}\nformats = [\"json\"]\nutc_offset = \"+08:00\"\n\
             schedule = [{{ period = \"day\", at = \"01:30\" }}, {{ period = \"week\", at = \"02:00\" }}]\n",
            reports.path().display().to_string()
        );
        let config = SyncConfig::from_toml_with_env(&toml, "test", []).unwrap();
        config.validate().unwrap();
        let scheduler = ReportScheduler::from_config(&config).unwrap().unwrap();
        // Monday the 23rd, 01:00: the 22nd is not due yet, the 21st is; the
        // week that ended on Sunday is not due before 02:00, the one before
        // it is (a first run writes only the latest period due).
        let run = scheduler
            .run_due(&ctx.store, at(23, 1, 0).to_utc())
            .await
            .unwrap();
        let labels: Vec<String> = run.iter().map(|r| r.period.to_string()).collect();
        assert_eq!(labels, ["day 2026-11-21", "week 2026-W46"]);
        // 02:00: the 22nd, and the week that ended on Sunday.
        let run = scheduler
            .run_due(&ctx.store, at(23, 2, 0).to_utc())
            .await
            .unwrap();
        let labels: Vec<String> = run.iter().map(|r| r.period.to_string()).collect();
        assert_eq!(labels, ["day 2026-11-22", "week 2026-W47"]);
        // Again: nothing is due.
        let run = scheduler
            .run_due(&ctx.store, at(23, 23, 0).to_utc())
            .await
            .unwrap();
        assert!(run.is_empty());
        // Two days later (the daemon was down on the 24th): both missed
        // days are caught up.
        let run = scheduler
            .run_due(&ctx.store, at(25, 3, 0).to_utc())
            .await
            .unwrap();
        let labels: Vec<String> = run.iter().map(|r| r.period.to_string()).collect();
        assert_eq!(labels, ["day 2026-11-23", "day 2026-11-24"]);
        assert_eq!(
            days_written(reports.path()),
            ["2026-11-21", "2026-11-22", "2026-11-23", "2026-11-24"]
        );
    })
    .await;
}

/// The daemon's scheduler writing a day's report at 01:30 in `formats`
/// (TOML list items) into `out`, with `more` configuration.
fn daily_at_0130(out: &Path, formats: &str, more: &str) -> ReportScheduler {
    let toml = format!(
        "[report]\nout_dir = {:?}\nformats = [{formats}]\n\
         schedule = [{{ period = \"day\", at = \"01:30\" }}]\n{more}",
        out.display().to_string()
    );
    let config = SyncConfig::from_toml_with_env(&toml, "test", []).unwrap();
    ReportScheduler::from_config(&config).unwrap().unwrap()
}

/// Pulls one report received at 23:50 on the 21st, and leaves it pending
/// (as if an address source had been down when it was pulled).
async fn pull_late_report_of_21st(store: &Store) {
    let (gd, gd_egress) = case("gd-mobile", 21);
    pull(
        store,
        &[stored(gd, &gd_egress, at(21, 23, 50), 1)],
        at(21, 23, 55),
    )
    .await;
}

/// The daemon writes a day's report on time even while reports received
/// that day are still pending (an address source was down, say), and the
/// report says it will change once they are processed: the daemon then
/// writes it again, instead of leaving the incomplete report as the day's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_report_written_with_pending_reports_is_written_again() {
    on_each_backend("scheduled_pending_rewritten", |ctx| async move {
        pull_late_report_of_21st(&ctx.store).await;
        let reports = tempfile::tempdir().unwrap();
        let scheduler = daily_at_0130(reports.path(), "\"json\", \"csv\"", "");
        let json = || -> Value {
            serde_json::from_slice(
                &std::fs::read(reports.path().join("lineprobe-report-day-2026-11-21.json"))
                    .unwrap(),
            )
            .unwrap()
        };

        let run = scheduler
            .run_due(&ctx.store, at(22, 1, 30).to_utc())
            .await
            .unwrap();
        assert_eq!(run.len(), 1);
        assert_eq!(run[0].pending, 1);
        assert_eq!(json()["summary"]["reports_pending"], 1);
        let marker = reports
            .path()
            .join("lineprobe-report-day-2026-11-21.unsettled");
        let note = std::fs::read_to_string(&marker).unwrap();
        assert!(
            note.contains("1 report(s) received in the period were still pending"),
            "{note}"
        );
        // Still pending: nothing new to write.
        let run = scheduler
            .run_due(&ctx.store, at(22, 1, 45).to_utc())
            .await
            .unwrap();
        assert!(run.is_empty(), "{run:?}");

        assert_eq!(process(&ctx.store).await, 1);
        // The daemon restarted meanwhile: what it kept in memory is gone,
        // and the newest report written is looked at again.
        let scheduler = daily_at_0130(reports.path(), "\"json\", \"csv\"", "");
        let run = scheduler
            .run_due(&ctx.store, at(22, 2, 0).to_utc())
            .await
            .unwrap();
        let labels: Vec<String> = run.iter().map(|r| r.period.to_string()).collect();
        assert_eq!(labels, ["day 2026-11-21"], "written again once processed");
        let f = json();
        assert_eq!(f["summary"]["reports_pending"], 0, "{:#}", f["summary"]);
        assert_eq!(f["summary"]["lines_observed"], 1);
        assert!(
            !marker.exists(),
            "a settled report is no longer marked unsettled"
        );
        // Whole now: not written again.
        let run = scheduler
            .run_due(&ctx.store, at(22, 3, 0).to_utc())
            .await
            .unwrap();
        assert!(run.is_empty(), "{run:?}");
    })
    .await;
}

/// While nothing changes for an unsettled period (a collector down, an
/// address source failing), the daemon looks at it less and less often,
/// the wait doubling from a minute up to an hour; what it waited for is
/// written at the next look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsettled_period_that_does_not_change_is_looked_at_less_often() {
    on_each_backend("unsettled_backoff", |ctx| async move {
        pull_late_report_of_21st(&ctx.store).await;
        let reports = tempfile::tempdir().unwrap();
        let scheduler = daily_at_0130(reports.path(), "\"json\"", "");
        let labels = |run: Vec<lineprobe_sync::WrittenReport>| -> Vec<String> {
            run.iter().map(|r| r.period.to_string()).collect()
        };
        let run = scheduler
            .run_due(&ctx.store, at(22, 1, 30).to_utc())
            .await
            .unwrap();
        assert_eq!(labels(run), ["day 2026-11-21"]);
        // Looked at (01:31, nothing changed: next after a minute), again
        // at 01:32 (next after two minutes, at 01:34).
        for minute in [31, 32] {
            let run = scheduler
                .run_due(&ctx.store, at(22, 1, minute).to_utc())
                .await
                .unwrap();
            assert!(run.is_empty(), "{run:?}");
        }
        // Processed meanwhile: not looked at before 01:34.
        assert_eq!(process(&ctx.store).await, 1);
        let run = scheduler
            .run_due(&ctx.store, at(22, 1, 33).to_utc())
            .await
            .unwrap();
        assert!(run.is_empty(), "looked at before its wait ended: {run:?}");
        let run = scheduler
            .run_due(&ctx.store, at(22, 1, 34).to_utc())
            .await
            .unwrap();
        assert_eq!(labels(run), ["day 2026-11-21"]);
        assert!(
            !reports
                .path()
                .join("lineprobe-report-day-2026-11-21.unsettled")
                .exists()
        );
    })
    .await;
}

/// A restarted daemon writes again every period it wrote unsettled, not
/// only the newest: the day before it stopped is still pending after the
/// next day's report was written, and is found by its `.unsettled` file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_writes_again_an_older_unsettled_period() {
    on_each_backend("restart_older_unsettled", |ctx| async move {
        pull_late_report_of_21st(&ctx.store).await;
        let reports = tempfile::tempdir().unwrap();
        let marked = |d: u32| {
            reports
                .path()
                .join(format!("lineprobe-report-day-2026-11-{d}.unsettled"))
                .exists()
        };
        let scheduler = daily_at_0130(reports.path(), "\"json\", \"xlsx\"", "");
        let run = scheduler
            .run_due(&ctx.store, at(22, 1, 30).to_utc())
            .await
            .unwrap();
        assert_eq!(run.len(), 1);
        assert!(run[0].unsettled());
        assert!(marked(21));
        // The next day's report (nothing pending in it) is written while
        // the 21st still waits: the 21st is no longer the newest.
        let run = scheduler
            .run_due(&ctx.store, at(23, 1, 30).to_utc())
            .await
            .unwrap();
        let labels: Vec<String> = run.iter().map(|r| r.period.to_string()).collect();
        assert_eq!(labels, ["day 2026-11-22"]);
        assert!(!run[0].unsettled());
        assert!(marked(21) && !marked(22));

        // The daemon restarts, and the report is processed meanwhile.
        drop(scheduler);
        assert_eq!(process(&ctx.store).await, 1);
        let scheduler = daily_at_0130(reports.path(), "\"json\", \"xlsx\"", "");
        let run = scheduler
            .run_due(&ctx.store, at(23, 2, 0).to_utc())
            .await
            .unwrap();
        // The 22nd's report compares it with the 21st: written again too.
        let labels: Vec<String> = run.iter().map(|r| r.period.to_string()).collect();
        assert_eq!(
            labels,
            ["day 2026-11-21", "day 2026-11-22"],
            "the older unsettled day is written again, and the day after it"
        );
        let json = |d: u32| -> Value {
            let name = format!("lineprobe-report-day-2026-11-{d}.json");
            serde_json::from_slice(&std::fs::read(reports.path().join(name)).unwrap()).unwrap()
        };
        let f = json(21);
        assert_eq!(f["summary"]["reports_pending"], 0, "{:#}", f["summary"]);
        assert_eq!(f["summary"]["lines_observed"], 1);
        assert_eq!(json(22)["previous"]["lines_observed"], 1);
        assert!(!marked(21));
        // Settled: nothing more to write, and no marker left behind.
        let run = scheduler
            .run_due(&ctx.store, at(23, 3, 0).to_utc())
            .await
            .unwrap();
        assert!(run.is_empty(), "{run:?}");
        let leftovers: Vec<String> = snapshot(reports.path())
            .into_keys()
            .filter(|n| n.ends_with(".unsettled"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    })
    .await;
}

/// A report written before every configured collector was pulled past the
/// period's end says which were not (their late reports may be missing) and
/// is written again until they are, each time with how far they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_report_waits_for_every_collector_to_be_pulled_past_its_end() {
    on_each_backend("scheduled_collectors_behind", |ctx| async move {
        let (gd, gd_egress) = case("gd-mobile", 21);
        pull_and_process(
            &ctx.store,
            &[stored(gd, &gd_egress, at(21, 23, 50), 1)],
            at(21, 23, 55),
        )
        .await;
        let reports = tempfile::tempdir().unwrap();
        let collector = format!(
            "[[collector]]\nname = \"{COLLECTOR}\"\nurl = \"https://127.0.0.1:9\"\n\
             token_env = \"X\"\n"
        );
        let scheduler = daily_at_0130(reports.path(), "\"json\", \"html\", \"csv\"", &collector);
        let stem = reports.path().join("lineprobe-report-day-2026-11-21");
        let json = || -> Value {
            serde_json::from_slice(&std::fs::read(stem.with_extension("json")).unwrap()).unwrap()
        };
        let html = || std::fs::read_to_string(stem.with_extension("html")).unwrap();
        let behind_in_csv = || {
            let summary = read_csv(
                &reports
                    .path()
                    .join("lineprobe-report-day-2026-11-21-summary.csv"),
            );
            summary
                .iter()
                .find(|r| r["metric"] == "collectors_behind")
                .unwrap()["value"]
                .clone()
        };

        // Written on time, never pulled to its end: says so.
        let run = scheduler
            .run_due(&ctx.store, at(22, 1, 30).to_utc())
            .await
            .unwrap();
        assert_eq!(run.len(), 1);
        assert_eq!(run[0].behind, [COLLECTOR]);
        assert_eq!(
            json()["collectors_behind"],
            json!([{"collector": COLLECTOR, "pulled_through": null}])
        );
        assert!(html().contains("Incomplete"));
        assert_eq!(behind_in_csv(), "1");

        // Pulled to its end by a round that started at midnight: not a
        // margin past the end yet, still behind, now with how far.
        ctx.store
            .record_caught_up(COLLECTOR, at(22, 0, 0).timestamp_millis())
            .await
            .unwrap();
        let run = scheduler
            .run_due(&ctx.store, at(22, 1, 45).to_utc())
            .await
            .unwrap();
        assert_eq!(run.len(), 1);
        assert_eq!(
            json()["collectors_behind"][0]["pulled_through"],
            "2026-11-22T00:00:00+08:00"
        );
        let note = std::fs::read_to_string(stem.with_extension("unsettled")).unwrap();
        assert!(
            note.contains(&format!(
                "Collector {COLLECTOR} was not yet pulled past the period's end (last pulled to \
                 its end by the round of 2026-11-22T00:00:00+08:00)"
            )),
            "{note}"
        );

        // By a round two minutes past the end: whole, written again.
        ctx.store
            .record_caught_up(COLLECTOR, at(22, 0, 2).timestamp_millis())
            .await
            .unwrap();
        let run = scheduler
            .run_due(&ctx.store, at(22, 2, 0).to_utc())
            .await
            .unwrap();
        assert_eq!(run.len(), 1);
        assert!(run[0].behind.is_empty());
        assert_eq!(json()["collectors_behind"], json!([]));
        assert!(!html().contains("Incomplete"));
        assert_eq!(behind_in_csv(), "0");
        assert!(!stem.with_extension("unsettled").exists());
        let run = scheduler
            .run_due(&ctx.store, at(22, 3, 0).to_utc())
            .await
            .unwrap();
        assert!(run.is_empty(), "{run:?}");
    })
    .await;
}

/// A period written again (after late reports were processed) whose rewrite
/// stops half-way — the process killed, a file that cannot be replaced —
/// must not stay marked as written over CSV tables of two runs: its summary
/// (the CSV marker) goes before the first table changes and comes back
/// last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_cut_short_leaves_the_period_unmarked() {
    on_each_backend("rewrite_cut_short", |ctx| async move {
        let (gd, gd_egress) = case("gd-mobile", 21);
        pull_and_process(
            &ctx.store,
            &[stored(gd, &gd_egress, at(21, 9, 0), 1)],
            at(21, 9, 5),
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::embedded().unwrap();
        let s = settings(dir.path(), &[ReportFormat::Csv]);
        write_reports(&ctx.store, &catalog, &s, &[day(21)], &Progress::hidden())
            .await
            .unwrap();
        let stem = "lineprobe-report-day-2026-11-21";
        let marked = |s: &ReportSettings| {
            lineprobe_sync::written_periods(&s.out_dir, PeriodKind::Day, &s.formats)
                .unwrap()
                .contains(&day(21))
        };
        assert!(marked(&s));

        // A late report of the day, then a rewrite that fails at the
        // collectors table (after the group tables changed).
        let (bj, bj_egress) = case("bj-unicom", 21);
        pull_and_process(
            &ctx.store,
            &[stored(bj, &bj_egress, at(21, 10, 0), 2)],
            at(21, 23, 0),
        )
        .await;
        let blocked = dir.path().join(format!("{stem}-collectors.csv"));
        std::fs::remove_file(&blocked).unwrap();
        std::fs::create_dir(&blocked).unwrap();
        write_reports(&ctx.store, &catalog, &s, &[day(21)], &Progress::hidden())
            .await
            .unwrap_err();
        let carriers = read_csv(&dir.path().join(format!("{stem}-by-carrier.csv")));
        assert_eq!(carriers.len(), 2, "the by-carrier table is the new one");
        assert!(
            !marked(&s),
            "the day is marked written while its tables come from two runs: summary {:?}",
            read_csv(&dir.path().join(format!("{stem}-summary.csv")))
                .first()
                .map(|r| r["value"].clone())
        );
        // Once the rewrite can finish, the day is whole and marked again.
        std::fs::remove_dir(&blocked).unwrap();
        write_reports(&ctx.store, &catalog, &s, &[day(21)], &Progress::hidden())
            .await
            .unwrap();
        assert!(marked(&s));
        let summary = read_csv(&dir.path().join(format!("{stem}-summary.csv")));
        assert_eq!(summary[0]["metric"], "lines_observed");
        assert_eq!(summary[0]["value"], "2");
        // An unchanged rewrite takes nothing away.
        let again = write_reports(&ctx.store, &catalog, &s, &[day(21)], &Progress::hidden())
            .await
            .unwrap();
        assert!(
            again[0]
                .files
                .iter()
                .all(|f| f.outcome == FileOutcome::Unchanged)
        );
        assert!(marked(&s));
    })
    .await;
}

// ---- the command line ------------------------------------------------------

/// Exit code, standard output, standard error.
type Outcome = (i32, String, String);

fn lineprobe_sync(args: &[&str]) -> Outcome {
    let output = Command::new(env!("CARGO_BIN_EXE_lineprobe-sync"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_writes_the_files() {
    on_each_backend("the_command_writes_the_files", |ctx| async move {
        seed(&ctx.store).await;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let out_s = out.display().to_string();
        // The seeded days are over on the 24th, whatever the machine's clock
        // says; a later --now wins.
        let run = |args: &[&str]| {
            let mut all = vec!["--database", ctx.url.as_str(), "report"];
            if !args.contains(&"--now") {
                all.extend(["--now", "2026-11-24T00:30:00+08:00"]);
            }
            all.extend_from_slice(args);
            lineprobe_sync(&all)
        };

        let (code, stdout, stderr) = run(&[
            "--period",
            "day",
            "--at",
            "2026-11-21",
            "--format",
            "json,html",
            "--out",
            &out_s,
        ]);
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{stdout}");
        assert!(lines.iter().all(|l| l.starts_with("written\t")), "{stdout}");
        let json: Value = serde_json::from_slice(
            &std::fs::read(out.join("lineprobe-report-day-2026-11-21.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(json["summary"]["lines_observed"], 4);
        assert!(out.join("lineprobe-report-day-2026-11-21.html").exists());
        assert!(
            !out.join("lineprobe-report-day-2026-11-21-summary.csv")
                .exists()
        );
        // Again: the same files, untouched.
        let (code, stdout, _) = run(&[
            "--at",
            "2026-11-21",
            "--format",
            "html,json",
            "--out",
            &out_s,
        ]);
        assert_eq!(code, 0);
        assert!(
            stdout.lines().all(|l| l.starts_with("unchanged\t")),
            "{stdout}"
        );

        // Catch-up on the 24th: the 22nd and 23rd follow the 21st.
        let (code, stdout, stderr) = run(&[
            "--catch-up",
            "--format",
            "json,html",
            "--out",
            &out_s,
            "--now",
            "2026-11-24T03:00:00+08:00",
        ]);
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        assert_eq!(
            days_written(&out),
            ["2026-11-21", "2026-11-22", "2026-11-23"]
        );
        let (code, stdout, _) = run(&[
            "--catch-up",
            "--format",
            "json,html",
            "--out",
            &out_s,
            "--now",
            "2026-11-24T03:00:00+08:00",
        ]);
        assert_eq!(code, 0);
        assert!(stdout.starts_with("up to date"), "{stdout}");

        // A week, all formats, into a folder that does not exist yet.
        let weekly = dir.path().join("weekly/reports");
        let (code, stdout, stderr) = run(&[
            "--period",
            "week",
            "--at",
            "2026-W47",
            "--out",
            &weekly.display().to_string(),
        ]);
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        assert_eq!(stdout.lines().count(), 14, "{stdout}");
        for name in ["summary.csv", "xlsx"] {
            let sep = if name == "xlsx" { '.' } else { '-' };
            let file = format!("lineprobe-report-week-2026-W47{sep}{name}");
            assert!(weekly.join(&file).exists(), "{file}");
        }

        check_mistakes(&run, &out_s);
    })
    .await;
}

/// Mistakes are the caller's to fix (exit 2), with a message saying how.
fn check_mistakes(run: &dyn Fn(&[&str]) -> Outcome, out: &str) {
    // Mistakes are the caller's to fix (exit 2), with a message saying how.
    let (code, _, stderr) = run(&["--at", "2999-01-01", "--out", out]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not over"), "{stderr}");
    let (code, _, stderr) = run(&["--at", "last tuesday", "--out", out]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--at"), "{stderr}");
    let (code, _, stderr) = run(&["--period", "year"]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = run(&["--format", "pdf"]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = run(&["--catch-up", "--at", "2026-11-21"]);
    assert_eq!(code, 2, "{stderr}");
}
