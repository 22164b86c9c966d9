//! The back office talking to collectors, against a fake collector on
//! loopback that counts what it is asked and answers when the test says:
//! a manifest publication is audited before anything is sent (and its
//! outcome after), and the traffic page's answers are kept briefly and
//! shared, one request per collector at a time.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "../../testsupport/ports.rs"]
mod ports;

mod backoffice_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use backoffice_support::on_each_backend;
use lineprobe_shared::{Catalog, Classifier, ClassifierConfig, ManifestSigningKey};
use lineprobe_sync::{
    BackofficeConfig, BackofficeState, CollectorEndpoint, Store, backoffice_router, hash_password,
};
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

const PASSWORD: &str = "correct horse battery";
const TOKEN: &str = "fake-collector-export-token-0123456789abcdef";

/// What the fake collector was asked, and the gates it waits at.
#[derive(Clone)]
struct Fake {
    /// `GET /export/traffic/episodes` requests so far.
    traffic_asks: Arc<AtomicUsize>,
    /// How long each traffic answer takes.
    traffic_delay: Duration,
    /// A permit per `PUT /export/manifest` that arrived.
    manifest_arrived: Arc<Semaphore>,
    /// A permit lets one `PUT /export/manifest` answer (500).
    manifest_release: Arc<Semaphore>,
}

impl Fake {
    fn new(traffic_delay: Duration) -> Fake {
        Fake {
            traffic_asks: Arc::new(AtomicUsize::new(0)),
            traffic_delay,
            manifest_arrived: Arc::new(Semaphore::new(0)),
            manifest_release: Arc::new(Semaphore::new(0)),
        }
    }

    /// Serves on loopback (plain HTTP); returns the address.
    async fn start(&self) -> SocketAddr {
        let router = Router::new()
            .route("/export/traffic/episodes", get(episodes))
            .route("/export/traffic/low-trust", get(low_trust))
            .route(
                "/export/manifest",
                get(|| async { StatusCode::NOT_FOUND }).put(manifest),
            )
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    }

    /// Waits (at most 20 s) until a manifest has arrived.
    async fn manifest_has_arrived(&self) {
        tokio::time::timeout(Duration::from_secs(20), self.manifest_arrived.acquire())
            .await
            .expect("no manifest arrived at the collector")
            .unwrap()
            .forget();
    }
}

async fn episodes(State(fake): State<Fake>) -> Response {
    let n = fake.traffic_asks.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(fake.traffic_delay).await;
    // The count of asks stands in for "opened since start": the page shows
    // which answer it holds.
    axum::Json(serde_json::json!({ "open": 0, "opened_since_start": n, "episodes": [] }))
        .into_response()
}

async fn low_trust() -> Response {
    axum::Json(serde_json::json!({ "units": [] })).into_response()
}

async fn manifest(State(fake): State<Fake>) -> Response {
    fake.manifest_arrived.add_permits(1);
    fake.manifest_release.acquire().await.unwrap().forget();
    (StatusCode::INTERNAL_SERVER_ERROR, "the collector broke").into_response()
}

fn endpoint(name: &str, addr: SocketAddr, timeout_s: u64) -> CollectorEndpoint {
    let mut endpoint = CollectorEndpoint::new(name, format!("http://{addr}"), TOKEN);
    endpoint.allow_plain_http = true;
    endpoint.timeout_s = timeout_s;
    endpoint
}

/// The back office over `store` with `collectors`, a manifest key and the
/// clock `clock` (Unix ms).
fn app(store: &Store, collectors: Vec<CollectorEndpoint>, clock: &Arc<AtomicI64>) -> Router {
    app_with(BackofficeConfig::default(), store, collectors, clock)
}

fn app_with(
    config: BackofficeConfig,
    store: &Store,
    collectors: Vec<CollectorEndpoint>,
    clock: &Arc<AtomicI64>,
) -> Router {
    let clock = Arc::clone(clock);
    let state = BackofficeState::with_parts(
        config,
        store.clone(),
        Arc::new(Catalog::embedded().unwrap()),
        Classifier::new(&ClassifierConfig::default()).unwrap(),
        collectors,
        Some(ManifestSigningKey::generate()),
    )
    .with_clock(move || clock.load(Ordering::SeqCst));
    backoffice_router(state)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A signed-in session's cookies, sent with every request.
#[derive(Clone)]
struct Session {
    router: Router,
    cookies: BTreeMap<String, String>,
}

impl Session {
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, String) {
        let jar: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::COOKIE, jar.join("; "));
        let body = if method == Method::POST {
            request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            Body::from(serde_urlencoded::to_string(form).unwrap())
        } else {
            Body::empty()
        };
        let mut request = request.body(body).unwrap();
        request
            .extensions_mut()
            .insert(lineprobe_collector::ConnInfo {
                peer: "192.0.2.10:50000".parse().unwrap(),
                proxied: None,
                local: "127.0.0.1:8450".parse().unwrap(),
                tls: None,
            });
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        backoffice_support::keep_cookies(&mut self.cookies, response.headers());
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn get(&mut self, path: &str) -> (StatusCode, String) {
        self.send(Method::GET, path, &[]).await
    }

    /// Signs `name` in through the form.
    async fn sign_in(router: &Router, store: &Store, name: &str) -> Session {
        store
            .user_insert(name, "admin", &hash_password(PASSWORD).unwrap(), 0)
            .await
            .unwrap()
            .unwrap();
        let mut session = Session {
            router: router.clone(),
            cookies: BTreeMap::new(),
        };
        let (_, form) = session.get("/login").await;
        let csrf = csrf(&form);
        let (status, _) = session
            .send(
                Method::POST,
                "/login",
                &[
                    ("csrf", &csrf),
                    ("name", name),
                    ("password", PASSWORD),
                    ("next", "/"),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        session
    }
}

fn csrf(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("no csrf field") + 19;
    body[at..at + body[at..].find('"').unwrap()].to_owned()
}

fn publish_form(csrf: &str) -> Vec<(&str, &str)> {
    vec![
        ("csrf", csrf),
        ("endpoints", "https://collector-a.example.net"),
        ("path_patterns", "/api/v1/report"),
        ("interval_secs", "3600"),
        ("jitter_secs", "600"),
        ("catalog_versions", "carriers = 2026.11"),
    ]
}

/// Posts `form` to `path` on a task of its own (the request is under way
/// while the test looks at the database, and can be dropped midway).
fn post_in_background(
    session: &Session,
    path: &'static str,
    form: Vec<(String, String)>,
) -> tokio::task::JoinHandle<(StatusCode, String)> {
    let mut session = session.clone();
    tokio::spawn(async move {
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        session.send(Method::POST, path, &pairs).await
    })
}

fn owned(form: &[(&str, &str)]) -> Vec<(String, String)> {
    form.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The audit entries of `action`, oldest first.
async fn audited(store: &Store, action: &str) -> Vec<lineprobe_sync::AuditRow> {
    let mut log = store.audit_page(None, Some(action), 50).await.unwrap();
    log.reverse();
    log
}

/// The attempt is in the audit log while the manifest is still on its way
/// to the collector: a publication cut short (the request dropped, as by a
/// crash) leaves it, and one the collector fails gets its outcome as a
/// second entry. Republishing is audited the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_is_audited_before_it_is_sent() {
    on_each_backend(
        "a_publication_is_audited_before_it_is_sent",
        |url| async move {
            let store = Store::open(&url).await.unwrap();
            let fake = Fake::new(Duration::ZERO);
            let addr = fake.start().await;
            let clock = Arc::new(AtomicI64::new(now_ms()));
            let router = app(&store, vec![endpoint("hung", addr, 30)], &clock);
            let mut ann = Session::sign_in(&router, &store, "ann").await;
            let (_, page) = ann.get("/config").await;
            let token = csrf(&page);

            // Serial 1: the collector holds the request; the attempt is
            // audited already, naming who, which serial, what and where to.
            let first = post_in_background(&ann, "/config/publish", owned(&publish_form(&token)));
            fake.manifest_has_arrived().await;
            let attempts = audited(&store, "manifest_publish").await;
            assert_eq!(attempts.len(), 1, "audited before sending: {attempts:?}");
            assert_eq!(attempts[0].actor, "ann");
            let detail: serde_json::Value = serde_json::from_str(&attempts[0].detail_json).unwrap();
            assert_eq!(detail["serial"], 1);
            assert_eq!(detail["collectors"], serde_json::json!(["hung"]));
            assert_eq!(detail["manifest"]["path_patterns"][0], "/api/v1/report");
            assert!(audited(&store, "manifest_publish_result").await.is_empty());
            // The back office goes away mid-publish: the attempt stays.
            first.abort();
            assert!(first.await.unwrap_err().is_cancelled());
            assert_eq!(audited(&store, "manifest_publish").await.len(), 1);
            assert!(audited(&store, "manifest_publish_result").await.is_empty());

            // Serial 2: audited before sending, and the collector's failure
            // after it.
            let (_, page) = ann.get("/config").await;
            let token = csrf(&page);
            let second = post_in_background(&ann, "/config/publish", owned(&publish_form(&token)));
            fake.manifest_has_arrived().await;
            let attempts = audited(&store, "manifest_publish").await;
            assert_eq!(attempts.len(), 2);
            assert!(
                attempts[1].detail_json.contains("\"serial\":2"),
                "{attempts:?}"
            );
            assert!(audited(&store, "manifest_publish_result").await.is_empty());
            // Both held requests (the dropped one's too) may answer now.
            fake.manifest_release.add_permits(2);
            let (status, _) = second.await.unwrap();
            assert_eq!(status, StatusCode::SEE_OTHER);
            // The server may have dropped the aborted request's handler
            // before it took its permit: one left over would let the next
            // upload answer at once instead of being held.
            fake.manifest_release
                .forget_permits(fake.manifest_release.available_permits());
            let results = audited(&store, "manifest_publish_result").await;
            assert_eq!(results.len(), 1, "{results:?}");
            assert_eq!(results[0].actor, "ann");
            let detail: serde_json::Value = serde_json::from_str(&results[0].detail_json).unwrap();
            assert_eq!(detail["serial"], 2);
            assert_eq!(detail["accepted"], serde_json::json!([]));
            assert_eq!(detail["refused"][0]["collector"], "hung");
            assert!(
                detail["refused"][0]["message"]
                    .as_str()
                    .unwrap()
                    .contains("500"),
                "{detail}"
            );
            assert!(results[0].id > attempts[1].id);

            // Republishing serial 2 to the collector that refused it.
            let (_, page) = ann.get("/config").await;
            let token = csrf(&page);
            let again = post_in_background(
                &ann,
                "/config/republish",
                owned(&[("csrf", &token), ("serial", "2")]),
            );
            fake.manifest_has_arrived().await;
            let attempts = audited(&store, "manifest_republish").await;
            assert_eq!(attempts.len(), 1, "audited before sending: {attempts:?}");
            assert_eq!(attempts[0].actor, "ann");
            assert!(attempts[0].detail_json.contains("\"serial\":2"));
            assert!(attempts[0].detail_json.contains("\"hung\""));
            assert!(
                audited(&store, "manifest_republish_result")
                    .await
                    .is_empty()
            );
            fake.manifest_release.add_permits(1);
            assert_eq!(again.await.unwrap().0, StatusCode::SEE_OTHER);
            let results = audited(&store, "manifest_republish_result").await;
            assert_eq!(results.len(), 1);
            assert!(results[0].detail_json.contains("\"refused\""));
            store.close().await;
        },
    )
    .await;
}

/// Several viewers of the traffic page at once cause one request to each
/// collector; for the next 15 s the page shows that answer (saying how old
/// it is) without asking again; after that it asks again. A collector that
/// never answers costs its timeout once, not on every view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_traffic_page_shares_one_recent_answer_per_collector() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite:{}", dir.path().join("sync.db").display()))
        .await
        .unwrap();
    let fake = Fake::new(Duration::from_millis(400));
    let counted = fake.start().await;
    // Accepts connections and never answers.
    let blackhole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = blackhole.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = blackhole.accept().await {
            held.push(socket);
        }
    });
    let down = ports::unused_loopback_addr();
    let clock = Arc::new(AtomicI64::new(now_ms()));
    let router = app(
        &store,
        vec![
            endpoint("counted", counted, 10),
            endpoint("silent", silent, 2),
            endpoint("down", down, 2),
        ],
        &clock,
    );
    let ann = Session::sign_in(&router, &store, "ann").await;

    let started = Instant::now();
    let views = futures_util::future::join_all((0..5).map(|_| {
        let mut viewer = ann.clone();
        async move { viewer.get("/traffic").await }
    }))
    .await;
    let took = started.elapsed();
    assert_eq!(
        fake.traffic_asks.load(Ordering::SeqCst),
        1,
        "one request for five viewers"
    );
    assert!(
        took < Duration::from_secs(8),
        "bounded by the silent one's timeout: {took:?}"
    );
    for (status, page) in &views {
        assert_eq!(*status, StatusCode::OK);
        assert!(
            page.contains("1 opened since the collector started"),
            "{page}"
        );
        assert!(page.contains("(0 s ago)"), "{page}");
        assert_eq!(
            page.matches("Could not read its traffic view").count(),
            2,
            "{page}"
        );
    }

    // Five seconds on: the same answers, five seconds old, at once.
    clock.fetch_add(5_000, Ordering::SeqCst);
    let started = Instant::now();
    let (status, page) = ann.clone().get("/traffic").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fake.traffic_asks.load(Ordering::SeqCst), 1);
    assert!(
        page.contains("1 opened since the collector started"),
        "{page}"
    );
    assert_eq!(page.matches("(5 s ago)").count(), 3, "{page}");

    // Past 15 s: asked again.
    clock.fetch_add(11_000, Ordering::SeqCst);
    let (status, page) = ann.clone().get("/traffic").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fake.traffic_asks.load(Ordering::SeqCst), 2);
    assert!(
        page.contains("2 opened since the collector started"),
        "{page}"
    );
    assert!(page.contains("(0 s ago)"), "{page}");
    store.close().await;
}

/// `backoffice.traffic_max_age_s` sets how long an answer is shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_traffic_pages_answers_are_kept_as_long_as_configured() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite:{}", dir.path().join("sync.db").display()))
        .await
        .unwrap();
    let fake = Fake::new(Duration::ZERO);
    let counted = fake.start().await;
    let clock = Arc::new(AtomicI64::new(now_ms()));
    let config = BackofficeConfig {
        traffic_max_age_s: 60,
        ..BackofficeConfig::default()
    };
    let router = app_with(
        config,
        &store,
        vec![endpoint("counted", counted, 10)],
        &clock,
    );
    let ann = Session::sign_in(&router, &store, "ann").await;
    let (status, page) = ann.clone().get("/traffic").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("shown for up to 60 s"), "{page}");
    assert_eq!(fake.traffic_asks.load(Ordering::SeqCst), 1);

    clock.fetch_add(59_000, Ordering::SeqCst);
    let (_, page) = ann.clone().get("/traffic").await;
    assert!(page.contains("(59 s ago)"), "{page}");
    assert_eq!(fake.traffic_asks.load(Ordering::SeqCst), 1, "still shown");

    clock.fetch_add(1_000, Ordering::SeqCst);
    let (_, page) = ann.clone().get("/traffic").await;
    assert!(page.contains("(0 s ago)"), "{page}");
    assert_eq!(fake.traffic_asks.load(Ordering::SeqCst), 2, "asked again");
    store.close().await;
}
