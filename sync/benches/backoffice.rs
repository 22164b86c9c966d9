//! The back office over a million lines: seeds the lines (each with its
//! observation and verdict) into a fresh SQLite database and, when
//! `LINEPROBE_TEST_PG` names a server, a fresh PostgreSQL database; then
//! measures, through the router exactly as a signed-in browser asks, the
//! lines list (first page, filtered pages, deep pages) and the dashboard,
//! and prints p50/p95 with PASS or MISS against 100 ms p95.
//!
//! `cargo bench -p lineprobe-sync --bench backoffice`
//! (`LINEPROBE_BENCH_LINES=200000` for a smaller run).
#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark program

#[path = "../tests/backoffice_support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use lineprobe_shared::{Catalog, Classifier, ClassifierConfig};
use lineprobe_sync::{BackofficeConfig, BackofficeState, Store, backoffice_router, hash_password};
use sqlx::Connection as _;
use tower::ServiceExt as _;

/// The target: p95 of each measured page.
const TARGET: Duration = Duration::from_millis(100);
/// Requests per scenario (after the warm-up).
const RUNS: usize = 60;
const WARMUP: usize = 5;
const PASSWORD: &str = "benchmark passphrase";

fn main() {
    let lines: u64 = std::env::var("LINEPROBE_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut all_pass = true;
        let sqlite = support::TestDb::sqlite();
        all_pass &= bench("SQLite", &sqlite.url, lines).await;
        sqlite.drop_database().await;
        match support::TestDb::postgres("backoffice benchmark").await {
            Some(pg) => {
                all_pass &= bench("PostgreSQL", &pg.url, lines).await;
                pg.drop_database().await;
            }
            None => println!("\nPostgreSQL: skipped (see above)"),
        }
        println!(
            "\n{}",
            if all_pass {
                "every measured page: PASS"
            } else {
                "some page: MISS"
            }
        );
    });
}

/// A signed-in client of the router.
struct Client {
    router: Router,
    cookie: String,
}

impl Client {
    async fn sign_in(router: &Router) -> Client {
        let form = router
            .clone()
            .oneshot(Request::get("/login").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let login_cookie = cookie_of(form.headers()).unwrap();
        let body = axum::body::to_bytes(form.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = String::from_utf8_lossy(&body);
        let at = body.find("name=\"csrf\" value=\"").unwrap() + 19;
        let csrf = &body[at..at + body[at..].find('"').unwrap()];
        let answer = router
            .clone()
            .oneshot(
                Request::post("/login")
                    .header(header::COOKIE, login_cookie)
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Body::from(
                        serde_urlencoded::to_string([
                            ("csrf", csrf),
                            ("name", "bench"),
                            ("password", PASSWORD),
                        ])
                        .unwrap(),
                    ))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::SEE_OTHER, "sign-in failed");
        Client {
            router: router.clone(),
            cookie: cookie_of(answer.headers()).unwrap(),
        }
    }

    /// GETs `path` and reads the whole page; returns how long it took.
    async fn time(&self, path: &str) -> (Duration, String) {
        let started = Instant::now();
        let response = self
            .router
            .clone()
            .oneshot(
                Request::get(path)
                    .header(header::COOKIE, &self.cookie)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(status, StatusCode::OK, "{path}");
        (took, String::from_utf8_lossy(&body).into_owned())
    }
}

fn cookie_of(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| !c.contains("Max-Age=0"))
        .and_then(|c| c.split(';').next())
        .map(str::to_owned)
}

fn state(store: &Store) -> BackofficeState {
    BackofficeState::with_parts(
        BackofficeConfig::default(),
        store.clone(),
        Arc::new(Catalog::embedded().unwrap()),
        Classifier::new(&ClassifierConfig::default()).unwrap(),
        Vec::new(),
        None,
    )
}

/// p50, p95 and the slowest of `times`.
fn percentiles(times: &mut [Duration]) -> (Duration, Duration, Duration) {
    times.sort();
    let at = |q: f64| {
        // Nearest rank.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a rank among a few dozen samples"
        )]
        let rank = ((q * times.len() as f64).ceil() as usize).clamp(1, times.len());
        times[rank - 1]
    };
    (at(0.50), at(0.95), times[times.len() - 1])
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Measures `paths` (cycled through) and prints one result line; returns
/// whether p95 is within the target.
async fn measure(client: &Client, label: &str, paths: &[String]) -> bool {
    for path in paths.iter().cycle().take(WARMUP) {
        client.time(path).await;
    }
    let mut times = Vec::with_capacity(RUNS);
    for path in paths.iter().cycle().take(RUNS) {
        times.push(client.time(path).await.0);
    }
    let (p50, p95, max) = percentiles(&mut times);
    let verdict = if p95 <= TARGET { "PASS" } else { "MISS" };
    println!(
        "  {label:<46} p50 {:>9}  p95 {:>9}  max {:>9}  {verdict}",
        ms(p50),
        ms(p95),
        ms(max)
    );
    p95 <= TARGET
}

/// The keyset cursor of the line at `offset` in the list's order, for a
/// deep page (read straight from the database: a user would have paged
/// there).
async fn cursor_at(url: &str, offset: u64, verdict: Option<&str>) -> String {
    let sql = format!(
        "SELECT last_seen, line_key FROM lines {} ORDER BY last_seen DESC, line_key DESC \
         LIMIT 1 OFFSET {offset}",
        verdict.map_or(String::new(), |v| format!("WHERE verdict = '{v}'"))
    );
    let row: (i64, String) = if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut conn)
            .await
            .unwrap()
    } else {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    format!("{}.{}", row.0, row.1)
}

/// What a scenario asks for: its label and the pages it cycles through.
struct Scenario {
    label: &'static str,
    paths: Vec<String>,
}

/// The pages measured over `lines` lines seeded up to `now`.
async fn scenarios(url: &str, lines: u64, now: i64) -> Vec<Scenario> {
    let month_ago = chrono::DateTime::from_timestamp_millis(now - 30 * 86_400_000)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    let provinces = ["CN-GD", "CN-BJ", "CN-SH", "CN-ZJ", "CN-SC", "CN-XZ"];
    let verdicts = [
        "non_compliant",
        "violating_ip",
        "proxy_suspected",
        "compliant",
    ];
    let mut deep = Vec::new();
    let mut deep_filtered = Vec::new();
    for fraction in [0.2, 0.5, 0.9] {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an offset into the list"
        )]
        let offset = (lines as f64 * fraction) as u64;
        let cursor = cursor_at(url, offset, None).await;
        deep.push(format!(
            "/lines?{}",
            serde_urlencoded::to_string([("after", cursor.as_str()), ("n", &offset.to_string())])
                .unwrap()
        ));
        let cursor = cursor_at(url, offset / 2, Some("compliant")).await;
        deep_filtered.push(format!(
            "/lines?{}",
            serde_urlencoded::to_string([("verdict", "compliant"), ("after", cursor.as_str())])
                .unwrap()
        ));
    }
    vec![
        Scenario {
            label: "lines: first page",
            paths: vec!["/lines".to_owned()],
        },
        Scenario {
            label: "lines: province + verdict",
            paths: provinces
                .iter()
                .zip(verdicts.iter().cycle())
                .map(|(p, v)| format!("/lines?province={p}&verdict={v}"))
                .collect(),
        },
        Scenario {
            label: "lines: declared + actual carrier, 30 days",
            paths: ["china_mobile", "china_telecom", "china_unicom"]
                .iter()
                .map(|c| format!("/lines?carrier={c}&actual=china_telecom&from={month_ago}"))
                .collect(),
        },
        Scenario {
            label: "lines: city + 30 days",
            paths: ["440100", "110000", "310000", "330100"]
                .iter()
                .map(|c| format!("/lines?city={c}&from={month_ago}"))
                .collect(),
        },
        Scenario {
            label: "lines: filters no line meets together",
            paths: vec![
                "/lines?carrier=china_mobile&actual=china_unicom".to_owned(),
                "/lines?verdict=indeterminate&actual=china_mobile".to_owned(),
                "/lines?province=CN-XZ&verdict=indeterminate&actual=china_telecom".to_owned(),
            ],
        },
        Scenario {
            label: "lines: deep page (20/50/90 %)",
            paths: deep,
        },
        Scenario {
            label: "lines: deep page, verdict filter",
            paths: deep_filtered,
        },
        Scenario {
            label: "dashboard",
            paths: vec!["/".to_owned()],
        },
    ]
}

async fn bench(backend: &str, url: &str, lines: u64) -> bool {
    println!("\n{backend}: seeding {lines} lines (with their observations and verdicts)…");
    let store = Store::open(url).await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let started = Instant::now();
    support::seed_synthetic(url, lines, now).await;
    println!("  seeded in {:.1} s", started.elapsed().as_secs_f64());
    store
        .user_insert("bench", "viewer", &hash_password(PASSWORD).unwrap(), now)
        .await
        .unwrap();
    let router = backoffice_router(state(&store));
    let client = Client::sign_in(&router).await;
    // The first dashboard counts the figures the lines pages use.
    let (_, dashboard) = client.time("/").await;
    assert!(dashboard.contains(&format!("<div class=\"big\">{lines}</div>")));
    let (_, first) = client.time("/lines").await;
    assert!(first.contains(&format!("{lines} lines matched at")));
    let mut pass = true;
    for scenario in scenarios(url, lines, now).await {
        pass &= measure(&client, scenario.label, &scenario.paths).await;
    }
    // The dashboard's recount, which the page above serves from memory:
    // the first request of a new state waits for it.
    let mut recounts = Vec::new();
    for _ in 0..5 {
        let fresh = Client::sign_in(&backoffice_router(state(&store))).await;
        recounts.push(fresh.time("/").await.0);
    }
    let (p50, _, max) = percentiles(&mut recounts);
    println!(
        "  {:<46} p50 {:>9}  max {:>9}  (info: in the background every dashboard_max_age_s)",
        "dashboard recount over every line",
        ms(p50),
        ms(max)
    );
    let (case_page, _) = client.time("/case?line=account%3Asyn100000001").await;
    println!(
        "  {:<46} {:>13}  (info)",
        "case view (one request)",
        ms(case_page)
    );
    store.close().await;
    pass
}
