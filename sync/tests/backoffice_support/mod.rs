//! Shared by the back-office tests and its benchmark: a fresh database on
//! each backend, the demo's real reports run through the pipeline, and
//! synthetic lines in bulk.
#![allow(dead_code, clippy::unwrap_used, unreachable_pub)] // each user takes what it needs

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lineprobe_shared::{Catalog, Classifier, ClassifierConfig};
use lineprobe_sync::{Pipeline, PipelineRun, PullBatch, PulledReport, Store, demo_chain};
use sqlx::Connection as _;

#[path = "../pgscratch/mod.rs"]
pub mod pgscratch;
use pgscratch::ScratchPg;

/// A database made for one test: a temporary SQLite file, or a PostgreSQL
/// database created on `LINEPROBE_TEST_PG` and dropped at the end.
pub struct TestDb {
    pub url: String,
    pg: Option<ScratchPg>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A fresh SQLite database.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("sync.db").display());
        TestDb {
            url,
            pg: None,
            _dir: Some(dir),
        }
    }

    /// A fresh PostgreSQL database, or `None` (with the reason printed)
    /// when `LINEPROBE_TEST_PG` is unset or unreachable, unless the lab is
    /// required.
    pub async fn postgres(test: &str) -> Option<TestDb> {
        let pg = ScratchPg::create(test, "bo").await?;
        Some(TestDb {
            url: pg.url.clone(),
            pg: Some(pg),
            _dir: None,
        })
    }

    /// Drops the PostgreSQL database (SQLite files go with the folder).
    pub async fn drop_database(self) {
        if let Some(pg) = &self.pg {
            pg.drop_database().await.unwrap();
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.pg.is_some()
    }
}

/// Runs `body` against a fresh SQLite database, then a fresh PostgreSQL
/// one when available; the PostgreSQL database is dropped even when the
/// body fails.
pub async fn on_each_backend<F, Fut>(test: &str, body: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let sqlite = TestDb::sqlite();
    run_isolated(body(sqlite.url.clone()))
        .await
        .inspect_err(|_| eprintln!("{test} failed on SQLite"))
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    let Some(pg) = TestDb::postgres(test).await else {
        return;
    };
    let outcome = run_isolated(body(pg.url.clone())).await;
    pg.drop_database().await;
    if let Err(panic) = outcome {
        eprintln!("{test} failed on PostgreSQL");
        std::panic::resume_unwind(panic);
    }
}

async fn run_isolated(
    body: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::any::Any + Send>> {
    match tokio::time::timeout(Duration::from_mins(3), tokio::spawn(body)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(join)) => Err(join
            .try_into_panic()
            .unwrap_or_else(|e| Box::new(e.to_string()))),
        Err(_) => Err(Box::new("the test body took more than 180 s".to_owned())),
    }
}

/// One pulled report of the demo.
#[derive(Debug, Clone)]
pub struct DemoRaw {
    pub seq: u64,
    pub report_id: Option<String>,
    pub received_at_ms: Option<i64>,
    pub body: Vec<u8>,
}

/// `seq, report_id, received_at, body` of a stored report.
type RawRow = (i64, Option<String>, Option<i64>, Vec<u8>);

/// The demo's reports as its collector stored them (envelope and all):
/// the demo runs once per test binary, on its own runtime, with a real
/// in-process collector on loopback.
pub fn demo_reports() -> &'static [DemoRaw] {
    static REPORTS: OnceLock<Vec<DemoRaw>> = OnceLock::new();
    REPORTS.get_or_init(|| {
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let options = lineprobe_sync::DemoOptions {
                    data_dir: Some(dir.path().to_path_buf()),
                    no_live_probe: true,
                };
                lineprobe_sync::run_demo(&options, &mut Vec::new(), &mut Vec::new())
                    .await
                    .unwrap();
                let url = format!("sqlite://{}", dir.path().join("sync.sqlite3").display());
                let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                let rows: Vec<RawRow> = sqlx::query_as(
                    "SELECT seq, report_id, received_at, body FROM raw_reports ORDER BY id",
                )
                .fetch_all(&mut conn)
                .await
                .unwrap();
                conn.close().await.unwrap();
                rows.into_iter()
                    .map(|(seq, report_id, received_at_ms, body)| DemoRaw {
                        seq: u64::try_from(seq).unwrap(),
                        report_id,
                        received_at_ms,
                        body,
                    })
                    .collect()
            })
        })
        .join()
        .unwrap()
    })
}

/// Pulls the demo's reports into `store` (as collector `demo-dmz-1`) and
/// runs the pipeline with the demo's address data: ten lines, one in
/// quarantine.
pub async fn seed_demo(store: &Store) {
    let reports: Vec<PulledReport> = demo_reports()
        .iter()
        .map(|r| PulledReport {
            seq: r.seq,
            report_id: r.report_id.clone(),
            received_at_ms: r.received_at_ms,
            body: r.body.clone(),
        })
        .collect();
    let run = pull_and_judge(store, &reports).await;
    assert_eq!(run.applied.quarantined, 1, "{run:?}");
}

/// Commits `reports` as a pull from the demo's collector and runs the
/// pipeline over them with the demo's address data.
async fn pull_and_judge(store: &Store, reports: &[PulledReport]) -> PipelineRun {
    store
        .commit_pull(&PullBatch {
            collector: "demo-dmz-1",
            node_id: "demo-dmz-1",
            reports,
            next_after: reports.iter().map(|r| r.seq).max().unwrap(),
            pulled_at_ms: chrono::Utc::now().timestamp_millis(),
        })
        .await
        .unwrap();
    let catalog = Arc::new(Catalog::embedded().unwrap());
    let chain = Arc::new(demo_chain(&catalog).unwrap());
    let classifier = Classifier::new(&ClassifierConfig::default()).unwrap();
    Pipeline::new(catalog, chain, classifier)
        .run_pending(store, 500, |_| {})
        .await
        .unwrap()
}

/// Adds a line whose subscriber declared only the carrier: the demo's
/// China Mobile line in Shenzhen (account 07552660101) sent again as
/// account `account`, so that its province and city are filled from the
/// actual ones. Call after [`seed_demo`] (it runs the demo's pipeline).
pub async fn seed_filled(store: &Store, account: &str) {
    let original = demo_reports()
        .iter()
        .find(|r| String::from_utf8_lossy(&r.body).contains("\"07552660101\""))
        .unwrap();
    let mut doc: serde_json::Value = serde_json::from_slice(&original.body).unwrap();
    let address = doc["declared"]["address"].clone();
    doc["declared"] = serde_json::json!({ "carrier": "china_mobile", "address": address });
    doc["account"] = serde_json::json!(account);
    let report_id = "0193f0a0-0000-7000-8000-00000000f111";
    doc["report_id"] = serde_json::json!(report_id);
    let seq = demo_reports().iter().map(|r| r.seq).max().unwrap() + 1;
    doc["envelope"]["seq"] = serde_json::json!(seq);
    let reports = [PulledReport {
        seq,
        report_id: Some(report_id.to_owned()),
        received_at_ms: original.received_at_ms,
        body: serde_json::to_vec(&doc).unwrap(),
    }];
    let run = pull_and_judge(store, &reports).await;
    assert_eq!(run.applied.quarantined, 0, "{run:?}");
}

/// What synthetic lines look like: the verdict mix and how far back they
/// were last seen.
pub const SYNTHETIC_DAYS: i64 = 60;

/// Adds `n` synthetic lines (`account:syn1…`), each with one observation
/// and one verdict, spread over the catalog's provinces and the declarable
/// carriers and over the last [`SYNTHETIC_DAYS`] days before `now_ms`:
/// about 80 % compliant, 8 % non-compliant, 5 % violating IP, 3 % proxy
/// suspected, 4 % indeterminate. The rows are made by the database itself
/// (one INSERT … SELECT per table), so a million take seconds.
#[allow(clippy::too_many_lines, reason = "the SQL of three tables")]
pub async fn seed_synthetic(url: &str, n: u64, now_ms: i64) {
    let catalog = Catalog::embedded().unwrap();
    let mut places = Vec::new();
    for p in catalog.provinces() {
        if let Some(city) = catalog
            .cities_in(&p.id)
            .find_map(|c| c.code.as_ref().map(|code| code.as_str().to_owned()))
        {
            places.push((p.id.as_str().to_owned(), city));
        }
    }
    let carriers: Vec<String> = [
        "china_mobile",
        "china_telecom",
        "china_unicom",
        "china_broadnet",
    ]
    .into_iter()
    .filter(|c| {
        lineprobe_shared::CarrierId::new(c)
            .ok()
            .and_then(|id| catalog.carrier_by_id(&id).map(|_| ()))
            .is_some()
    })
    .map(str::to_owned)
    .collect();
    assert!(
        places.len() > 10 && carriers.len() >= 3,
        "catalog too small"
    );
    let places_sql = places
        .iter()
        .enumerate()
        .map(|(i, (p, c))| format!("({i}, '{p}', '{c}')"))
        .collect::<Vec<_>>()
        .join(", ");
    let carriers_sql = carriers
        .iter()
        .enumerate()
        .map(|(i, c)| format!("({i}, '{c}')"))
        .collect::<Vec<_>>()
        .join(", ");
    let (np, nc) = (places.len(), carriers.len());
    let minutes = SYNTHETIC_DAYS * 1440;
    let setup = [
        "DROP TABLE IF EXISTS syn_places".to_owned(),
        "DROP TABLE IF EXISTS syn_carriers".to_owned(),
        "DROP TABLE IF EXISTS syn_rows".to_owned(),
        "CREATE TABLE syn_places (idx BIGINT PRIMARY KEY, province TEXT, city TEXT)".to_owned(),
        "CREATE TABLE syn_carriers (idx BIGINT PRIMARY KEY, carrier TEXT)".to_owned(),
        format!("INSERT INTO syn_places VALUES {places_sql}"),
        format!("INSERT INTO syn_carriers VALUES {carriers_sql}"),
        // One row per line with everything derived from its number; ids
        // continue after the largest ones in the tables.
        format!(
            "CREATE TABLE syn_rows AS \
             WITH RECURSIVE seq(i) AS (SELECT CAST(1 AS BIGINT) UNION ALL SELECT i + 1 FROM seq WHERE i < {n}) \
             SELECT i, \
               (SELECT COALESCE(MAX(id), 0) FROM observations) + i AS obs_id, \
               (SELECT COALESCE(MAX(id), 0) FROM verdicts) + i AS verdict_id, \
               'account:syn' || (100000000 + i) AS line_key, \
               'SYN-' || (100000000 + i) AS install_id, \
               CAST(100000000 + i AS TEXT) AS account, \
               (i * 7) % {np} AS place, \
               (i * 3) % {nc} AS carrier, \
               CASE WHEN (i * 31) % 100 < 80 THEN 'compliant' \
                    WHEN (i * 31) % 100 < 88 THEN 'non_compliant' \
                    WHEN (i * 31) % 100 < 93 THEN 'violating_ip' \
                    WHEN (i * 31) % 100 < 96 THEN 'proxy_suspected' \
                    ELSE 'indeterminate' END AS verdict, \
               {now_ms} - ((i * 7919) % {minutes}) * 60000 - (i % 60000) AS last_seen, \
               '113.' || (i % 250) || '.' || ((i / 250) % 250) || '.' || ((i / 62500) % 250) \
                 AS egress_ip \
             FROM seq"
        ),
    ];
    let inserts = [
        "INSERT INTO observations (id, obs_key, line_key, install_id, account, \
         declared_province, declared_city, declared_carrier, egress_ip, first_hop_ip, path, \
         engine, agent_version, os, count, first_seen, last_seen, first_report_id, \
         last_report_id, latest_verdict_id, latest_verdict_key) \
         SELECT r.obs_id, 'syn-obs-' || r.i, r.line_key, r.install_id, r.account, p.province, \
         p.city, c.carrier, r.egress_ip, '113.0.0.1', '[[1,[\"192.168.1.1\"]],[2,[\"113.0.0.1\"]]]', \
         'trippy-core', '0.1.0', 'windows', 1, r.last_seen, r.last_seen, 'syn-report-' || r.i, \
         'syn-report-' || r.i, r.verdict_id, 'syn-verdict-' || r.i \
         FROM syn_rows r JOIN syn_places p ON p.idx = r.place JOIN syn_carriers c ON c.idx = r.carrier"
            .to_owned(),
        format!(
            "INSERT INTO verdicts (id, line_key, observation_id, report_id, verdict, verdict_key, \
             reasons, evidence, actual_carrier, actual_province, actual_city, egress_carrier, \
             first_hop_carrier, filled, data_versions, observed_at, decided_at) \
             SELECT r.verdict_id, r.line_key, r.obs_id, 'syn-report-' || r.i, r.verdict, \
             'syn-verdict-' || r.i, \
             CASE r.verdict \
               WHEN 'compliant' THEN '[{{\"code\":\"carrier_match\",\"outcome\":\"pass\",\"message\":\"synthetic\"}}]' \
               WHEN 'non_compliant' THEN '[{{\"code\":\"carrier_mismatch\",\"outcome\":\"fail\",\"message\":\"synthetic\"}}]' \
               WHEN 'violating_ip' THEN '[{{\"code\":\"province_mismatch\",\"outcome\":\"fail\",\"message\":\"synthetic\"}}]' \
               WHEN 'proxy_suspected' THEN '[{{\"code\":\"egress_hosting\",\"outcome\":\"signal\",\"message\":\"synthetic\"}}]' \
               ELSE '[{{\"code\":\"carrier_unknown\",\"outcome\":\"unknown\",\"message\":\"synthetic\"}}]' END, \
             '{{}}', ac.carrier, p.province, p.city, ac.carrier, ac.carrier, '[]', '{{}}', \
             r.last_seen, r.last_seen \
             FROM syn_rows r JOIN syn_places p ON p.idx = r.place \
             JOIN syn_carriers ac ON ac.idx = CASE WHEN r.verdict = 'non_compliant' \
               THEN (r.carrier + 1) % {nc} ELSE r.carrier END"
        ),
        format!(
            "INSERT INTO lines (line_key, account, install_id, declared_province, declared_city, \
             declared_carrier, actual_carrier, actual_province, actual_city, egress_ip, \
             first_hop_ip, verdict, verdict_id, observation_id, reports, first_seen, last_seen, \
             current_from, updated_at) \
             SELECT r.line_key, r.account, r.install_id, p.province, p.city, c.carrier, \
             CASE WHEN r.verdict = 'indeterminate' THEN NULL ELSE ac.carrier END, \
             p.province, p.city, r.egress_ip, '113.0.0.1', r.verdict, r.verdict_id, r.obs_id, 1, \
             r.last_seen, r.last_seen, r.last_seen, r.last_seen \
             FROM syn_rows r JOIN syn_places p ON p.idx = r.place \
             JOIN syn_carriers c ON c.idx = r.carrier \
             JOIN syn_carriers ac ON ac.idx = CASE WHEN r.verdict = 'non_compliant' \
               THEN (r.carrier + 1) % {nc} ELSE r.carrier END"
        ),
    ];
    let cleanup = [
        "DROP TABLE syn_rows",
        "DROP TABLE syn_places",
        "DROP TABLE syn_carriers",
    ];
    let statements: Vec<String> = setup
        .into_iter()
        .chain(inserts)
        .chain(cleanup.iter().map(|s| (*s).to_owned()))
        .collect();
    execute_all(url, &statements).await;
}

/// Runs `statements` in one transaction on the database at `url`, then
/// `ANALYZE`.
pub async fn execute_all(url: &str, statements: &[String]) {
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        for sql in statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("{e}: {sql}"));
        }
        tx.commit().await.unwrap();
        sqlx::raw_sql("ANALYZE").execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    } else {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        for sql in statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("{e}: {sql}"));
        }
        tx.commit().await.unwrap();
        sqlx::raw_sql("ANALYZE").execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    }
}

/// Takes a response's `Set-Cookie` headers into `jar` as a browser does:
/// each cookie set, one with `Max-Age=0` removed.
pub fn keep_cookies(
    jar: &mut std::collections::BTreeMap<String, String>,
    headers: &axum::http::HeaderMap,
) {
    for cookie in headers.get_all(axum::http::header::SET_COOKIE) {
        let text = cookie.to_str().unwrap();
        let (pair, attributes) = text.split_once(';').unwrap_or((text, ""));
        let (name, value) = pair.split_once('=').unwrap();
        if attributes.contains("Max-Age=0") {
            jar.remove(name);
        } else {
            jar.insert(name.to_owned(), value.to_owned());
        }
    }
}
