//! End to end over real sockets: the back office served on HTTPS (its
//! generated certificate), an admin signing in with a real HTTP client,
//! and probe manifests signed and published to real in-process collectors
//! on loopback — one that accepts, one whose key differs, one that is down
//! and comes up later — with the page showing who accepted.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "../../testsupport/ports.rs"]
mod ports;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use lineprobe_collector::{CollectorConfig, Overrides, RunningCollector};
use lineprobe_shared::{ManifestSigningKey, SignedManifest, accept_update};
use lineprobe_sync::{
    BackofficeState, CollectorClient, CollectorEndpoint, Store, SyncConfig, hash_password,
    serve_backoffice_on,
};
use reqwest::header;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "publish-test-export-token-0123456789abcdef";
const PASSWORD: &str = "correct horse battery";

/// A collector on loopback that accepts manifests signed by `key`.
async fn collector(
    dir: &Path,
    node: &str,
    key: &ManifestSigningKey,
    export: SocketAddr,
) -> RunningCollector {
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        export_listen: Some(export),
        data_dir: Some(dir.to_path_buf()),
        plain_http: false,
    };
    let toml = format!(
        "node_id = \"{node}\"\n[export]\ntoken = \"{TOKEN}\"\n[manifest]\npublic_key = \"{}\"\n\
         [shutdown]\ngrace_secs = 1\n",
        key.verifying_key().to_base64()
    );
    let config =
        CollectorConfig::from_toml_with_env(&toml, "test", Vec::new(), &overrides).unwrap();
    RunningCollector::start(&config).await.unwrap()
}

fn endpoint(name: &str, dir: &Path, export: SocketAddr) -> CollectorEndpoint {
    let mut endpoint = CollectorEndpoint::new(name, format!("https://{export}"), TOKEN);
    endpoint.ca_file = Some(dir.join("tls/cert.pem"));
    endpoint.timeout_s = 5;
    endpoint
}

/// An HTTP client with a cookie jar of its own making.
struct Client {
    http: reqwest::Client,
    base: String,
    cookies: BTreeMap<String, String>,
}

impl Client {
    async fn send(
        &mut self,
        request: reqwest::RequestBuilder,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let jar: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let response = request
            .header(header::COOKIE, jar.join("; "))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        for cookie in headers.get_all(header::SET_COOKIE) {
            let text = cookie.to_str().unwrap();
            assert!(
                text.contains("; Secure") && text.contains("HttpOnly"),
                "{text}"
            );
            let (pair, attributes) = text.split_once(';').unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        (status, headers, response.text().await.unwrap())
    }

    async fn get(&mut self, path: &str) -> (u16, String) {
        let request = self.http.get(format!("{}{path}", self.base));
        let (status, _, body) = self.send(request).await;
        (status, body)
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> (u16, String, String) {
        let request = self.http.post(format!("{}{path}", self.base)).form(form);
        let (status, headers, body) = self.send(request).await;
        let location = headers
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, location, body)
    }
}

fn csrf(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").unwrap() + 19;
    body[at..at + body[at..].find('"').unwrap()].to_owned()
}

/// The rows of the current manifest's collector table: name → accepted.
fn accepted(body: &str) -> BTreeMap<String, bool> {
    let table = &body[body
        .find("Current manifest")
        .unwrap_or_else(|| panic!("{body}"))
        ..body.find("Edit and publish").unwrap()];
    table
        .split("<tr><td>")
        .skip(1)
        .map(|row| {
            let name = row[..row.find('<').unwrap()].to_owned();
            (name, row.contains("✓ accepted"))
        })
        .collect()
}

fn form<'a>(csrf: &'a str, agent: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("csrf", csrf),
        (
            "endpoints",
            "https://collector-a.example.net\nhttps://collector-b.example.net",
        ),
        ("path_patterns", "/api/v1/report\n/static/*/upload"),
        ("interval_secs", "3600"),
        ("jitter_secs", "600"),
        ("catalog_versions", "carriers = 2026.11"),
        ("agent_version", agent),
        (
            "agent_url",
            "https://downloads.example.net/lineprobe-agent.msi",
        ),
        (
            "agent_sha256",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines, reason = "one admin session, step by step")]
async fn an_admin_signs_and_publishes_manifests_to_the_collectors() {
    let dir = tempfile::tempdir().unwrap();
    let key = ManifestSigningKey::generate();
    let stranger = ManifestSigningKey::generate();
    let (dir_a, dir_b, dir_c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    let a = collector(&dir_a, "node-a", &key, "127.0.0.1:0".parse().unwrap()).await;
    // B checks manifests against another key: it refuses ours.
    let b = collector(&dir_b, "node-b", &stranger, "127.0.0.1:0".parse().unwrap()).await;
    // C is down at first; it comes up on this address later.
    let c_addr = ports::unused_loopback_addr();

    let key_file = dir.path().join("manifest.pem");
    std::fs::write(&key_file, key.to_pem().unwrap()).unwrap();
    let mut config = SyncConfig::from_toml_with_env(
        &format!(
            "data_dir = {:?}\n[backoffice]\nmanifest_key = {:?}\n",
            dir.path().join("data").display().to_string(),
            key_file.display().to_string()
        ),
        "test",
        [],
    )
    .unwrap();
    // C's certificate does not exist until it starts: it gets the same
    // trust as A (a self-signed certificate it will not match) until then.
    config.collectors = vec![
        endpoint("a", &dir_a, a.export_addr),
        endpoint("b", &dir_b, b.export_addr),
        endpoint("c", &dir_a, c_addr),
    ];
    config.validate().unwrap();
    let db = format!("sqlite:{}", dir.path().join("sync.db").display());
    let store = Store::open(&db).await.unwrap();
    store
        .user_insert("ann", "admin", &hash_password(PASSWORD).unwrap(), 0)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shutdown = CancellationToken::new();
    let state = BackofficeState::new(&config, store.clone()).unwrap();
    let server = {
        let (config, shutdown) = (config.clone(), shutdown.clone());
        tokio::spawn(async move { serve_backoffice_on(&config, state, listener, shutdown).await })
    };
    let cert = dir.path().join("data/backoffice/tls/cert.pem");
    for _ in 0..100 {
        if cert.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pem = std::fs::read(&cert).unwrap();
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut ann = Client {
        http,
        base: format!("https://127.0.0.1:{port}"),
        cookies: BTreeMap::new(),
    };

    // Nothing without a session, over the wire too.
    let (status, _) = ann.get("/config").await;
    assert_eq!(status, 303);
    let (_, login) = ann.get("/login").await;
    let token = csrf(&login);
    let (status, location, _) = ann
        .post(
            "/login",
            &[
                ("csrf", &token),
                ("name", "ann"),
                ("password", PASSWORD),
                ("next", "/config"),
            ],
        )
        .await;
    assert_eq!((status, location.as_str()), (303, "/config"));

    // Serial 1: A accepts, B refuses the signature, C is unreachable.
    let (status, page) = ann.get("/config").await;
    assert_eq!(status, 200);
    assert!(
        page.contains(&key.key_id()),
        "the page names the signing key"
    );
    let token = csrf(&page);
    let (status, location, body) = ann.post("/config/publish", &form(&token, "1.4.0")).await;
    assert_eq!(
        (status, location.as_str()),
        (303, "/config?published=1"),
        "{body}"
    );
    let (_, page) = ann.get(&location).await;
    assert_eq!(
        accepted(&page),
        BTreeMap::from([
            ("a".to_owned(), true),
            ("b".to_owned(), false),
            ("c".to_owned(), false)
        ])
    );
    assert!(
        page.contains("does not match the back office"),
        "B's refusal is explained"
    );
    let (serial, signed) = a.staging.current_manifest().await.unwrap().unwrap();
    assert_eq!(serial, 1);
    let signed = SignedManifest::from_json(&signed).unwrap();
    let manifest = accept_update(None, chrono::Utc::now(), &signed, &key.verifying_key()).unwrap();
    assert_eq!(manifest.endpoints.len(), 2);
    assert_eq!(manifest.latest_agent.unwrap().version, "1.4.0");
    assert_eq!(manifest.catalog_versions["carriers"], "2026.11");
    assert!(b.staging.current_manifest().await.unwrap().is_none());

    // C comes up; publishing again reaches only those that lack it.
    let c = collector(&dir_c, "node-c", &key, c_addr).await;
    // The back office still trusts A's certificate for C: the TLS refusal
    // says what to fix. Then it is restarted trusting C's own.
    let (_, page) = ann.get("/config").await;
    let token = csrf(&page);
    let (status, _, _) = ann
        .post("/config/republish", &[("csrf", &token), ("serial", "1")])
        .await;
    assert_eq!(status, 303);
    let (_, page) = ann.get("/config").await;
    assert!(!accepted(&page)["c"]);
    assert!(page.contains("ca_file"), "the TLS failure says what to fix");
    shutdown.cancel();
    server.await.unwrap().unwrap();

    config.collectors[2] = endpoint("c", &dir_c, c_addr);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let state = BackofficeState::new(&config, store.clone()).unwrap();
    let server = {
        let (config, shutdown) = (config.clone(), shutdown.clone());
        tokio::spawn(async move { serve_backoffice_on(&config, state, listener, shutdown).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, page) = ann.get("/config").await;
    assert_eq!(status, 200, "the session survives a restart");
    let token = csrf(&page);
    let (status, _, _) = ann
        .post("/config/republish", &[("csrf", &token), ("serial", "1")])
        .await;
    assert_eq!(status, 303);
    let (_, page) = ann.get("/config").await;
    assert_eq!(
        accepted(&page),
        BTreeMap::from([
            ("a".to_owned(), true),
            ("b".to_owned(), false),
            ("c".to_owned(), true)
        ])
    );
    assert_eq!(c.staging.current_manifest().await.unwrap().unwrap().0, 1);
    let publications = store.publications(1).await.unwrap();
    let to_a = publications.iter().filter(|p| p.collector == "a").count();
    assert_eq!(to_a, 1, "A, which had it, was not sent it again");

    // A collector that holds a higher serial (published by another back
    // office) refuses; the next manifest is numbered above it.
    let client = CollectorClient::new(&config.collectors[0]).unwrap();
    publish_elsewhere(&client, &signed, &key, 41, |_| {}).await;
    let (status, location, _) = ann.post("/config/publish", &form(&token, "1.5.0")).await;
    assert_eq!((status, location.as_str()), (303, "/config?published=2"));
    let (_, page) = ann.get(&location).await;
    assert!(!accepted(&page)["a"]);
    assert!(page.contains("serial 41"), "{page}");
    let (status, location, _) = ann.post("/config/publish", &form(&token, "1.5.0")).await;
    assert_eq!((status, location.as_str()), (303, "/config?published=42"));
    let (_, page) = ann.get(&location).await;
    assert!(accepted(&page)["a"]);
    assert!(accepted(&page)["c"]);
    assert_eq!(a.staging.current_manifest().await.unwrap().unwrap().0, 42);

    // The traffic page asks every collector for its anomaly episodes and
    // low-trust sources (none here: see collector_traffic.rs for a flood).
    let (status, page) = ann.get("/traffic").await;
    assert_eq!(status, 200);
    for want in [
        "Collector <span class=\"mono\">a</span>",
        "Anomaly episodes",
        "Low-trust sources",
    ] {
        assert!(page.contains(want), "{want} in {page}");
    }

    // A bad form publishes nothing and says why.
    let mut bad = form(&token, "1.6.0");
    bad[1].1 = "http://plain.example.net";
    let (status, _, body) = ann.post("/config/publish", &bad).await;
    assert_eq!(status, 400);
    assert!(body.contains("Not published") && body.contains("https://"));
    assert_eq!(store.manifest_latest().await.unwrap().unwrap().serial, 42);

    let log = store
        .audit_page(None, Some("manifest_publish"), 10)
        .await
        .unwrap();
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|r| r.actor == "ann"));
    assert!(log[0].detail_json.contains("\"serial\":42"));
    assert_eq!(
        store
            .audit_page(None, Some("manifest_republish"), 10)
            .await
            .unwrap()
            .len(),
        2
    );

    // A holds the next serial with other contents (another back office
    // signed it): refused as not newer, and not taken for ours.
    publish_elsewhere(&client, &signed, &key, 43, |m| {
        m.path_patterns = vec!["/elsewhere/*".to_owned()];
    })
    .await;
    let (status, location, _) = ann.post("/config/publish", &form(&token, "1.7.0")).await;
    assert_eq!((status, location.as_str()), (303, "/config?published=43"));
    let (_, page) = ann.get(&location).await;
    assert!(!accepted(&page)["a"], "{page}");
    assert!(accepted(&page)["c"]);
    assert!(page.contains("other contents"), "{page}");
    // Republishing 43 does not change that; a newer manifest reaches A.
    let (status, _, _) = ann
        .post(
            "/config/republish",
            &[("csrf", token.as_str()), ("serial", "43")],
        )
        .await;
    assert_eq!(status, 303);
    let (_, page) = ann.get("/config?published=43").await;
    assert!(!accepted(&page)["a"], "{page}");
    let (status, location, _) = ann.post("/config/publish", &form(&token, "1.7.0")).await;
    assert_eq!((status, location.as_str()), (303, "/config?published=44"));
    let (_, page) = ann.get(&location).await;
    assert!(accepted(&page)["a"]);
    assert_eq!(a.staging.current_manifest().await.unwrap().unwrap().0, 44);

    shutdown.cancel();
    server.await.unwrap().unwrap();
    for collector in [a, b, c] {
        collector.shutdown().await.unwrap();
    }
    store.close().await;
}

/// The manifest inside `signed`.
fn manifest_from(signed: &SignedManifest, key: &ManifestSigningKey) -> lineprobe_shared::Manifest {
    signed.verify(&key.verifying_key()).unwrap()
}

/// Puts on `client`'s collector, as another back office would, the
/// manifest inside `signed` as serial `serial`, issued now, changed by
/// `edit`; the collector must take it.
async fn publish_elsewhere(
    client: &CollectorClient,
    signed: &SignedManifest,
    key: &ManifestSigningKey,
    serial: u64,
    edit: impl FnOnce(&mut lineprobe_shared::Manifest),
) {
    let mut manifest = lineprobe_shared::Manifest {
        serial,
        ..manifest_from(signed, key)
    };
    manifest.issued_at = chrono::Utc::now();
    manifest.expires_at = manifest.issued_at + chrono::Duration::days(30);
    edit(&mut manifest);
    let signed = SignedManifest::sign(&manifest, key).unwrap();
    assert!(
        client
            .publish_manifest(signed.to_json().unwrap())
            .await
            .unwrap()
            .accepted
    );
}
