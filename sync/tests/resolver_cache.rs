//! The resolver cache in the internal database: a lookup service's answers
//! survive a restart (a new chain asks the database first, not the
//! service), answers under another field mapping are not reused, and
//! expired ones are not loaded.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use lineprobe_shared::Catalog;
use lineprobe_sync::{
    Chain, FieldMap, HttpSettings, HttpSource, Store, load_resolver_cache, save_resolver_cache,
};

/// A lookup service on loopback that knows one carrier for every address
/// and counts its requests.
fn service() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let router = Router::new()
        .route(
            "/ip/{ip}",
            get(
                |State(hits): State<Arc<AtomicUsize>>, Path(ip): Path<String>| async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    if ip.starts_with("198.18.") {
                        // An address the service knows nothing about.
                        return axum::Json(serde_json::json!({ "status": "fail" }));
                    }
                    axum::Json(serde_json::json!({
                        "status": "success", "isp": "中国电信", "region": "广东", "as": 4134
                    }))
                },
            ),
        )
        .with_state(Arc::clone(&hits));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, router).await.unwrap();
            });
    });
    (format!("http://{addr}/ip/{{ip}}"), hits)
}

fn chain(url: &str, fields: &str, catalog: &Arc<Catalog>) -> Chain {
    let fields: FieldMap = toml::from_str(fields).unwrap();
    let mut settings = HttpSettings::new("geo-api", url, fields);
    settings.rate_per_sec = 1000.0;
    settings.burst = 1000;
    settings.success = Some(toml::from_str("pointer = \"/status\"\nequals = \"success\"").unwrap());
    Chain::new(vec![Box::new(
        HttpSource::new(settings, Arc::clone(catalog)).unwrap(),
    )])
}

/// Lookups block: run them off the async runtime.
async fn resolve(chain: Arc<Chain>, catalog: Arc<Catalog>, ip: &str) -> Option<String> {
    let ip: IpAddr = ip.parse().unwrap();
    tokio::task::spawn_blocking(move || {
        chain
            .resolve(&catalog, ip)
            .unwrap()
            .carrier
            .map(|c| c.value.as_str().to_owned())
    })
    .await
    .unwrap()
}

const FIELDS: &str = "carrier = \"/isp\"\nprovince = \"/region\"\nasn = \"/as\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_survive_a_restart_through_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!(
        "sqlite://{}",
        dir.path().join("db.sqlite3").display()
    ))
    .await
    .unwrap();
    let catalog = Arc::new(Catalog::embedded().unwrap());
    let (url, hits) = service();

    let first = Arc::new(chain(&url, FIELDS, &catalog));
    assert_eq!(
        resolve(Arc::clone(&first), Arc::clone(&catalog), "113.108.209.1").await,
        Some("china_telecom".to_owned())
    );
    assert_eq!(
        resolve(Arc::clone(&first), Arc::clone(&catalog), "198.18.0.9").await,
        None
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    let saved = save_resolver_cache(&first, &store).await.unwrap();
    assert_eq!(saved, 2, "the answer and the 'knows nothing' answer");

    // A restart: a new chain, its cache empty until loaded from the database.
    let second = Arc::new(chain(&url, FIELDS, &catalog));
    assert_eq!(load_resolver_cache(&second, &store).await.unwrap(), 2);
    assert_eq!(
        resolve(Arc::clone(&second), Arc::clone(&catalog), "113.108.209.1").await,
        Some("china_telecom".to_owned())
    );
    assert_eq!(
        resolve(Arc::clone(&second), Arc::clone(&catalog), "198.18.0.9").await,
        None
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        2,
        "the service was not asked again"
    );

    // Another field mapping: the stored answers do not apply.
    let remapped = Arc::new(chain(&url, "carrier = \"/isp\"\n", &catalog));
    assert_eq!(load_resolver_cache(&remapped, &store).await.unwrap(), 0);
    resolve(Arc::clone(&remapped), Arc::clone(&catalog), "113.108.209.1").await;
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    store.close().await;
}
