//! The back office in a real headless Chromium, driven over `WebDriver` by
//! Debian's `chromedriver`: signing in, the dashboard, filtering lines, a
//! case view, the CSV export, publishing a manifest to a real collector as
//! an admin; a viewer kept off admin pages, nothing without signing in, a
//! form without its anti-forgery token refused. Screenshots of the main
//! pages go to `target/test-artifacts/backoffice/`.
//!
//! Without `chromium` and `chromedriver` the tests are skipped with a
//! printed reason, unless `LINEPROBE_REQUIRE_LAB=1`. Chromium is told to
//! resolve no host name but the loopback addresses: nothing leaves the
//! machine.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod backoffice_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backoffice_support::pgscratch::lab_required;
use backoffice_support::{seed_demo, seed_synthetic};
use base64::Engine as _;
use lineprobe_collector::{CollectorConfig, Overrides, RunningCollector};
use lineprobe_shared::ManifestSigningKey;
use lineprobe_sync::{
    BackofficeState, CollectorEndpoint, Store, SyncConfig, hash_password, serve_backoffice_on,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = "correct horse battery";
const TOKEN: &str = "browser-test-export-token-0123456789abcdef";
/// The `WebDriver` key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// `chromium` and `chromedriver`, or why the test cannot run.
fn browser_binaries() -> Result<(PathBuf, PathBuf), String> {
    let find = |names: &[&str]| {
        names.iter().find_map(|name| {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join(name))
                    .find(|p| p.is_file())
            })
        })
    };
    let chromium = find(&["chromium", "chromium-browser"])
        .ok_or("no `chromium` on PATH (Debian package chromium)")?;
    let driver = find(&["chromedriver"])
        .ok_or("no `chromedriver` on PATH (Debian package chromium-driver)")?;
    Ok((chromium, driver))
}

/// The binaries, or `None` after printing why the test is skipped.
fn binaries_or_skip(test: &str) -> Option<(PathBuf, PathBuf)> {
    match browser_binaries() {
        Ok(found) => Some(found),
        Err(why) => {
            assert!(!lab_required(), "{test}: LINEPROBE_REQUIRE_LAB=1 but {why}");
            eprintln!(
                "SKIPPED {test}: {why} (install chromium and chromium-driver; LINEPROBE_REQUIRE_LAB=1 fails instead)"
            );
            None
        }
    }
}

/// Where screenshots go: `target/test-artifacts/backoffice/` of the build.
fn artifacts_dir() -> PathBuf {
    let dir = std::env::var_os("LINEPROBE_ARTIFACTS_DIR").map_or_else(
        || {
            // target/debug/deps/<test binary> → target
            let exe = std::env::current_exe().unwrap();
            exe.ancestors().nth(3).unwrap().join("test-artifacts")
        },
        PathBuf::from,
    );
    let dir = dir.join("backoffice");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A chromedriver process and one browser session in it.
struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
    base: String,
    downloads: PathBuf,
}

impl Browser {
    async fn start(chromium: &Path, driver: &Path, base: &str, downloads: &Path) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_mins(1))
            .no_proxy()
            .build()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{url}/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1400,1100", "--no-first-run", "--no-default-browser-check",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-default-apps", "--disable-extensions",
                    "--disable-features=Translate,MediaRouter,OptimizationHints",
                    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                    "--lang=zh-CN",
                ],
                "prefs": {
                    "download.default_directory": downloads,
                    "download.prompt_for_download": false,
                },
            },
        } } });
        let answer: Value = http
            .post(format!("{url}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {answer}"))
            .to_owned();
        let browser = Browser {
            driver,
            http,
            session: format!("{url}/session/{session}"),
            base: base.to_owned(),
            downloads: downloads.to_path_buf(),
        };
        browser
            .command(
                "goog/cdp/execute",
                json!({ "cmd": "Browser.setDownloadBehavior",
                        "params": { "behavior": "allow", "downloadPath": downloads } }),
            )
            .await;
        browser
    }

    async fn command(&self, path: &str, body: Value) -> Value {
        let answer: Value = self
            .http
            .post(format!("{}/{path}", self.session))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            answer["value"].get("error").is_none(),
            "WebDriver {path}: {answer}"
        );
        answer["value"].clone()
    }

    async fn query(&self, path: &str) -> Value {
        let answer: Value = self
            .http
            .get(format!("{}/{path}", self.session))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["value"].clone()
    }

    async fn open(&self, path: &str) {
        self.command("url", json!({ "url": format!("{}{path}", self.base) }))
            .await;
    }

    async fn url(&self) -> String {
        self.query("url").await.as_str().unwrap().to_owned()
    }

    async fn source(&self) -> String {
        self.query("source").await.as_str().unwrap().to_owned()
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .command("element", json!({ "using": "css selector", "value": css }))
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    async fn elements(&self, css: &str) -> usize {
        self.command("elements", json!({ "using": "css selector", "value": css }))
            .await
            .as_array()
            .unwrap()
            .len()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.command(&format!("element/{id}/clear"), json!({}))
            .await;
        self.command(&format!("element/{id}/value"), json!({ "text": text }))
            .await;
    }

    async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.command(&format!("element/{id}/click"), json!({}))
            .await;
    }

    async fn script(&self, script: &str) -> Value {
        self.command("execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    /// A screenshot of the whole page (not only the window), as PNG.
    async fn screenshot(&self, name: &str) {
        let metrics = self
            .command(
                "goog/cdp/execute",
                json!({ "cmd": "Page.getLayoutMetrics", "params": {} }),
            )
            .await;
        let size = &metrics["cssContentSize"];
        let shot = self
            .command(
                "goog/cdp/execute",
                json!({ "cmd": "Page.captureScreenshot", "params": {
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": { "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1 },
                } }),
            )
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{name} is not a PNG");
        std::fs::write(artifacts_dir().join(format!("{name}.png")), bytes).unwrap();
    }

    async fn sign_in(&self, name: &str, password: &str) {
        self.open("/login").await;
        self.type_into("input[name=name]", name).await;
        self.type_into("input[name=password]", password).await;
        self.click("button[type=submit]").await;
    }

    /// Waits until the page's source holds `text`.
    async fn wait_for_text(&self, text: &str) -> String {
        let started = Instant::now();
        loop {
            let source = self.source().await;
            if source.contains(text) {
                return source;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the page never showed {text:?}: {source}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the browser is at a URL containing `part`.
    async fn wait_for_url(&self, part: &str) -> String {
        let started = Instant::now();
        loop {
            let url = self.url().await;
            if url.contains(part) {
                return url;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the browser never reached {part:?} (at {url})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for a finished download ending in `suffix`.
    async fn wait_for_download(&self, suffix: &str) -> PathBuf {
        let started = Instant::now();
        loop {
            if let Some(file) = std::fs::read_dir(&self.downloads)
                .unwrap()
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().ends_with(suffix))
            {
                return file;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no download");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn quit(mut self) {
        let _ = self.http.delete(&self.session).send().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A running back office over a store with the demo's lines and synthetic
/// ones, an admin `ann`, a viewer `vic`, and one collector that accepts
/// manifests signed by the back office's key.
struct Lab {
    _dir: tempfile::TempDir,
    base: String,
    store: Store,
    collector: RunningCollector,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), lineprobe_sync::Error>>,
}

impl Lab {
    async fn start() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let key = ManifestSigningKey::generate();
        let collector_dir = dir.path().join("collector");
        let overrides = Overrides {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            export_listen: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(collector_dir.clone()),
            plain_http: false,
        };
        let toml = format!(
            "node_id = \"dmz-1\"\n[export]\ntoken = \"{TOKEN}\"\n[manifest]\npublic_key = \"{}\"\n\
             [shutdown]\ngrace_secs = 1\n",
            key.verifying_key().to_base64()
        );
        let collector = RunningCollector::start(
            &CollectorConfig::from_toml_with_env(&toml, "test", Vec::new(), &overrides).unwrap(),
        )
        .await
        .unwrap();
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
        let mut endpoint =
            CollectorEndpoint::new("dmz-1", format!("https://{}", collector.export_addr), TOKEN);
        endpoint.ca_file = Some(collector_dir.join("tls/cert.pem"));
        config.collectors = vec![endpoint];
        config.validate().unwrap();
        let db = format!("sqlite:{}", dir.path().join("sync.db").display());
        let store = Store::open(&db).await.unwrap();
        seed_demo(&store).await;
        seed_synthetic(&db, 500, chrono::Utc::now().timestamp_millis() - 3_600_000).await;
        let hash = hash_password(PASSWORD).unwrap();
        store.user_insert("ann", "admin", &hash, 0).await.unwrap();
        store.user_insert("vic", "viewer", &hash, 0).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let state = BackofficeState::new(&config, store.clone()).unwrap();
        let server = {
            let shutdown = shutdown.clone();
            tokio::spawn(
                async move { serve_backoffice_on(&config, state, listener, shutdown).await },
            )
        };
        // Up when it answers.
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        let base = format!("https://127.0.0.1:{}", addr.port());
        for _ in 0..100 {
            if http.get(format!("{base}/login")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Lab {
            _dir: dir,
            base,
            store,
            collector,
            shutdown,
            server,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.unwrap().unwrap();
        self.collector.shutdown().await.unwrap();
        self.store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines, reason = "one admin session, page by page")]
async fn an_admin_works_through_the_back_office_in_chromium() {
    let Some((chromium, driver)) =
        binaries_or_skip("an_admin_works_through_the_back_office_in_chromium")
    else {
        return;
    };
    let lab = Lab::start().await;
    let downloads = tempfile::tempdir().unwrap();
    let browser = Browser::start(&chromium, &driver, &lab.base, downloads.path()).await;

    browser.open("/").await;
    assert!(
        browser.url().await.ends_with("/login"),
        "signed out, the dashboard sends to sign-in"
    );
    browser.screenshot("01-sign-in").await;
    browser.sign_in("ann", PASSWORD).await;
    let dashboard = browser.wait_for_text("Compliance rate").await;
    assert!(
        dashboard.contains("<div class=\"big\">510</div>"),
        "10 demo + 500 synthetic lines"
    );
    assert!(dashboard.contains("demo-dmz-1"));
    browser.screenshot("02-dashboard").await;

    // The session cookie as the browser keeps it.
    let cookies = browser.query("cookie").await;
    let session = cookies
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "__Host-lp_session")
        .unwrap();
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["secure"], true);
    assert_eq!(session["sameSite"], "Strict");
    assert_eq!(session["path"], "/");
    assert!(session["expiry"].as_u64().is_some(), "the cookie expires");

    // Filter the lines with the form.
    browser.click("a[href='/lines']").await;
    browser.wait_for_text("Export CSV").await;
    browser
        .click("select[name=verdict] option[value=non_compliant]")
        .await;
    browser
        .click("select[name=province] option[value=CN-GD]")
        .await;
    browser.click("form.filters button[type=submit]").await;
    let url = browser.wait_for_url("verdict=non_compliant").await;
    assert!(url.contains("province=CN-GD"), "{url}");
    let filtered = browser.wait_for_text("account:07552660505").await;
    let rows = browser.elements("td a[href^='/case?line=']").await;
    assert!(rows >= 1);
    assert_eq!(
        filtered.matches("class=\"badge v-non_compliant\"").count(),
        rows,
        "every listed line is non-compliant"
    );
    assert!(!filtered.contains("v-compliant\""));
    browser.screenshot("03-lines-filtered").await;

    // The CSV export of the filtered lines.
    browser.click("a.button[href^='/lines/export.csv']").await;
    let file = browser.wait_for_download(".csv").await;
    let csv = std::fs::read_to_string(&file).unwrap();
    let csv = csv.strip_prefix('\u{feff}').unwrap();
    assert!(csv.starts_with("line,account,install_id,verdict"));
    assert_eq!(csv.lines().count(), rows + 1);
    assert!(csv.lines().skip(1).all(|l| l.contains(",non_compliant,")));

    // A case view: its link names the line by a reference, not its key.
    let href = browser
        .script(
            "const a = [...document.querySelectorAll(\"td a[href^='/case?line=']\")]\
             .find(a => a.textContent === 'account:07552660505'); \
             a.click(); return a.getAttribute('href');",
        )
        .await;
    let href = href.as_str().unwrap_or_default();
    assert!(
        href.starts_with("/case?line=r") && !href.contains("0755"),
        "{href}"
    );
    let case = browser.wait_for_text("Declared against actual").await;
    for want in [
        "carrier_mismatch",
        "first public hop",
        "中国移动",
        "中国电信",
        "History",
    ] {
        assert!(case.contains(want), "the case view lacks {want}");
    }
    browser.screenshot("04-case-view").await;

    browser.open("/quarantine").await;
    browser.wait_for_text("SZ-LG-001010").await;
    browser.screenshot("05-quarantine").await;
    browser.open("/probes").await;
    browser.wait_for_text("Endpoint failures").await;
    browser.screenshot("06-probes").await;

    // Publish a manifest as admin.
    browser.open("/config").await;
    browser.wait_for_text("Edit and publish").await;
    browser
        .type_into("textarea[name=endpoints]", "https://collector.example.net")
        .await;
    browser
        .type_into("textarea[name=path_patterns]", "/api/v1/report")
        .await;
    browser
        .click("form[action='/config/publish'] button[type=submit]")
        .await;
    let published = browser.wait_for_text("Current manifest: serial 1").await;
    assert!(published.contains("✓ accepted"), "{published}");
    assert_eq!(
        lab.collector
            .staging
            .current_manifest()
            .await
            .unwrap()
            .unwrap()
            .0,
        1
    );
    browser.screenshot("07-probe-configuration").await;

    browser.open("/audit").await;
    let audit = browser.wait_for_text("manifest_publish").await;
    assert!(audit.contains("export_csv") && audit.contains("login"));
    browser.screenshot("08-audit-log").await;

    // Signing out ends the session.
    browser.click("form[action='/logout'] button").await;
    browser.wait_for_text("Sign in").await;
    browser.open("/lines").await;
    assert!(browser.url().await.contains("/login?next="));
    browser.quit().await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_strangers_and_forged_forms_are_kept_out_in_chromium() {
    let Some((chromium, driver)) =
        binaries_or_skip("viewers_strangers_and_forged_forms_are_kept_out_in_chromium")
    else {
        return;
    };
    let lab = Lab::start().await;
    let downloads = tempfile::tempdir().unwrap();
    let browser = Browser::start(&chromium, &driver, &lab.base, downloads.path()).await;

    // No page without signing in.
    for path in [
        "/",
        "/lines",
        "/case?line=account%3A07552660505",
        "/probes",
        "/config",
        "/audit",
    ] {
        browser.open(path).await;
        let url = browser.url().await;
        assert!(url.contains("/login"), "{path} → {url}");
        assert!(!browser.source().await.contains("07552660505") || path.contains("case"));
    }

    // A viewer reads, but the admin pages are closed and not offered.
    browser.sign_in("vic", PASSWORD).await;
    let home = browser.wait_for_text("Compliance rate").await;
    assert!(!home.contains("href=\"/config\""));
    for path in ["/config", "/users", "/audit"] {
        browser.open(path).await;
        browser.wait_for_text("Admins only").await;
    }
    browser.screenshot("09-viewer-refused").await;

    // A form sent without its anti-forgery token is refused.
    let before = lab.store.user_by_name("vic").await.unwrap().unwrap();
    browser.open("/account").await;
    browser.wait_for_text("Change your password").await;
    browser
        .script("document.querySelector('form[action=\"/account/password\"] input[name=csrf]').remove();")
        .await;
    browser.type_into("input[name=current]", PASSWORD).await;
    browser
        .type_into("input[name=password]", "a brand new passphrase")
        .await;
    browser
        .type_into("input[name=again]", "a brand new passphrase")
        .await;
    browser
        .click("form[action='/account/password'] button")
        .await;
    browser.wait_for_text("Form refused").await;
    browser.screenshot("10-forged-form-refused").await;
    let after = lab.store.user_by_name("vic").await.unwrap().unwrap();
    assert_eq!(
        after.password_hash, before.password_hash,
        "the password did not change"
    );
    // Nor did the session end.
    browser.open("/").await;
    browser.wait_for_text("Compliance rate").await;
    browser.quit().await;
    lab.stop().await;
}
