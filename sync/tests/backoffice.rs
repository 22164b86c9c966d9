//! The compliance back office through its router (no socket): sign-in,
//! sessions, anti-forgery tokens, throttling, roles, the audit log, and
//! every page over the demo's real lines; on SQLite and, with
//! `LINEPROBE_TEST_PG`, on PostgreSQL.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod backoffice_support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use backoffice_support::{
    execute_all, keep_cookies, on_each_backend, seed_demo, seed_filled, seed_synthetic,
};
use lineprobe_shared::{Catalog, Classifier, ClassifierConfig};
use lineprobe_sync::{
    BackofficeConfig, BackofficeState, NewSession, Store, backoffice_router, hash_password,
};
use sha2::Digest as _;
use sqlx::Connection as _;
use tower::ServiceExt as _;

const PASSWORD: &str = "correct horse battery";

/// A settable clock (Unix ms) for the state.
#[derive(Clone)]
struct Clock(Arc<AtomicI64>);

impl Clock {
    fn new() -> Clock {
        Clock(Arc::new(AtomicI64::new(
            chrono::Utc::now().timestamp_millis(),
        )))
    }
    fn advance_s(&self, s: i64) {
        self.0.fetch_add(s * 1000, Ordering::SeqCst);
    }
}

/// The back office over `store` with `config` and a settable clock.
fn app(store: &Store, config: BackofficeConfig, clock: &Clock) -> Router {
    let clock = clock.clone();
    let state = BackofficeState::with_parts(
        config,
        store.clone(),
        Arc::new(Catalog::embedded().unwrap()),
        Classifier::new(&ClassifierConfig::default()).unwrap(),
        Vec::new(),
        None,
    )
    .with_clock(move || clock.0.load(Ordering::SeqCst));
    backoffice_router(state)
}

/// Two free failures, then a lock of 4 s that doubles up to a minute.
fn quick_backoff() -> BackofficeConfig {
    BackofficeConfig {
        login_free_failures: 2,
        login_backoff_s: 4,
        login_backoff_max_s: 60,
        ..BackofficeConfig::default()
    }
}

async fn add_user(store: &Store, name: &str, role: &str) {
    let hash = hash_password(PASSWORD).unwrap();
    store
        .user_insert(name, role, &hash, chrono::Utc::now().timestamp_millis())
        .await
        .unwrap()
        .unwrap();
}

/// A response, read whole.
struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
    bytes: Vec<u8>,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The value of the first hidden `csrf` field.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("no csrf field")
            + 19;
        self.body[at..at + self.body[at..].find('"').unwrap()].to_owned()
    }

    fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }
}

/// A browser without a network: a cookie jar and a client address.
struct Browser {
    router: Router,
    cookies: BTreeMap<String, String>,
    ip: IpAddr,
    /// Sent as `X-Forwarded-For`, as a reverse proxy (or a liar) would.
    forwarded_for: Option<String>,
}

impl Browser {
    fn new(router: &Router) -> Browser {
        Browser {
            router: router.clone(),
            cookies: BTreeMap::new(),
            ip: "192.0.2.10".parse().unwrap(),
            forwarded_for: None,
        }
    }

    fn from(router: &Router, ip: &str) -> Browser {
        Browser {
            ip: ip.parse().unwrap(),
            ..Browser::new(router)
        }
    }

    async fn send(&mut self, method: Method, path: &str, form: Option<String>) -> Page {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(forwarded) = &self.forwarded_for {
            request = request.header("x-forwarded-for", forwarded);
        }
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            request = request.header(header::COOKIE, jar.join("; "));
        }
        let body = match form {
            Some(form) => {
                request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Body::from(form)
            }
            None => Body::empty(),
        };
        let mut request = request.body(body).unwrap();
        request
            .extensions_mut()
            .insert(lineprobe_collector::ConnInfo {
                peer: SocketAddr::new(self.ip, 50_000),
                proxied: None,
                local: "127.0.0.1:8450".parse().unwrap(),
                tls: None,
            });
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        keep_cookies(&mut self.cookies, &headers);
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .unwrap();
        Page {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
            bytes: bytes.to_vec(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send(Method::GET, path, None).await
    }

    /// A case page by a link from before references, which name the line
    /// by its key: the answer after the redirect to its reference.
    async fn get_old_case_link(&mut self, path: &str) -> Page {
        let page = self.get(path).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        let to = page.location().to_owned();
        assert!(to.starts_with("/case?line=r"), "{path} -> {to}");
        self.get(&to).await
    }

    async fn post(&mut self, path: &str, pairs: &[(&str, &str)]) -> Page {
        let form = serde_urlencoded::to_string(pairs).unwrap();
        self.send(Method::POST, path, Some(form)).await
    }

    /// Signs in through the form; returns the answer to the POST.
    async fn sign_in(&mut self, name: &str, password: &str) -> Page {
        let form = self.get("/login").await;
        assert_eq!(form.status, StatusCode::OK);
        let csrf = form.csrf();
        self.post(
            "/login",
            &[
                ("csrf", &csrf),
                ("name", name),
                ("password", password),
                ("next", "/"),
            ],
        )
        .await
    }

    /// The session's anti-forgery token, from a page's form.
    async fn csrf(&mut self) -> String {
        self.get("/account").await.csrf()
    }
}

/// The text of the page's notice.
fn notice(body: &str) -> &str {
    let Some(at) = body.find("class=\"notice") else {
        return "";
    };
    let start = at + body[at..].find('>').unwrap() + 1;
    &body[start..start + body[start..].find('<').unwrap()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_page_is_reachable_without_signing_in() {
    on_each_backend(
        "no_page_is_reachable_without_signing_in",
        |url| async move {
            let store = Store::open(&url).await.unwrap();
            seed_demo(&store).await;
            let app = app(&store, BackofficeConfig::default(), &Clock::new());
            let mut anonymous = Browser::new(&app);
            for path in [
                "/",
                "/lines",
                "/lines?verdict=compliant",
                "/lines/export.csv",
                "/case?line=account:07552660505",
                "/quarantine",
                "/probes",
                "/config",
                "/users",
                "/audit",
                "/account",
                "/no-such-page",
            ] {
                let page = anonymous.get(path).await;
                assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
                assert!(page.location().starts_with("/login"), "{path}");
                assert!(!page.body.contains("07552660505"), "{path} leaked data");
            }
            let page = anonymous.get("/lines?verdict=compliant").await;
            assert_eq!(
                page.location(),
                "/login?next=%2Flines%3Fverdict%3Dcompliant"
            );
            for path in ["/logout", "/config/publish", "/users", "/account/password"] {
                let page = anonymous.post(path, &[("csrf", "x")]).await;
                assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{path}");
            }
            assert_eq!(
                anonymous.get("/assets/app.css").await.status,
                StatusCode::OK
            );
            let login = anonymous.get("/login").await;
            assert_eq!(login.status, StatusCode::OK);
            let csp = login.headers[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap();
            assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
            assert_eq!(login.headers[header::CACHE_CONTROL], "no-store");
            store.close().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_makes_a_hardened_session_that_signing_out_ends() {
    on_each_backend("signing_in_makes_a_hardened_session", |url| async move {
        let store = Store::open(&url).await.unwrap();
        add_user(&store, "ann", "admin").await;
        let app = app(&store, BackofficeConfig::default(), &Clock::new());
        let mut ann = Browser::new(&app);
        let form = ann.get("/login").await;
        let login_cookie = form.set_cookies()[0].to_owned();
        for attribute in [
            "__Host-lp_login=",
            "Path=/",
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
        ] {
            assert!(login_cookie.contains(attribute), "{login_cookie}");
        }
        let done = ann.sign_in("ann", PASSWORD).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        assert_eq!(done.location(), "/");
        let session = done
            .set_cookies()
            .into_iter()
            .find(|c| c.starts_with("__Host-lp_session="))
            .unwrap()
            .to_owned();
        for attribute in [
            "Path=/",
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Max-Age=28800",
            "Expires=",
        ] {
            assert!(session.contains(attribute), "{session}");
        }
        // The database keeps the token's hash, never the token.
        let token = ann.cookies["__Host-lp_session"].clone();
        assert!(store.session_user(&token).await.unwrap().is_none());
        let hash = sha2::Sha256::digest(token.as_bytes())
            .iter()
            .fold(String::new(), |s, b| s + &format!("{b:02x}"));
        let session_row = store.session_user(&hash).await.unwrap().unwrap();
        assert_eq!(session_row.name, "ann");
        assert!(session_row.expires_at_ms > chrono::Utc::now().timestamp_millis());

        let dashboard = ann.get("/").await;
        assert_eq!(dashboard.status, StatusCode::OK, "{}", dashboard.body);
        assert!(dashboard.body.contains("Dashboard"));
        // Signing out ends the session on the server, not just the cookie.
        let stolen = ann.cookies.clone();
        let csrf = ann.csrf().await;
        let out = ann.post("/logout", &[("csrf", &csrf)]).await;
        assert_eq!(out.status, StatusCode::SEE_OTHER);
        assert!(store.session_user(&hash).await.unwrap().is_none());
        let mut replay = Browser::new(&app);
        replay.cookies = stolen;
        assert_eq!(replay.get("/").await.status, StatusCode::SEE_OTHER);

        let log = store.audit_page(None, None, 10).await.unwrap();
        let actions: Vec<&str> = log.iter().map(|r| r.action.as_str()).collect();
        assert_eq!(actions, ["logout", "login"]);

        // Signing in again from a browser that still carries a session
        // (switching accounts) ends that session on the server: it stayed
        // valid, unseen, until it expired.
        let mut again = Browser::new(&app);
        again.sign_in("ann", PASSWORD).await;
        let carried = again.cookies.clone();
        let done = again.sign_in("ann", PASSWORD).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        assert_ne!(
            again.cookies["__Host-lp_session"],
            carried["__Host-lp_session"]
        );
        assert_eq!(again.get("/").await.status, StatusCode::OK);
        let mut old = Browser::new(&app);
        old.cookies = carried;
        assert_eq!(old.get("/").await.status, StatusCode::SEE_OTHER);
        assert_eq!(log[1].actor, "ann");
        assert_eq!(log[1].source_ip, "192.0.2.10");
        store.close().await;
    })
    .await;
}

/// PostgreSQL's text holds no NUL: a name with one is an ordinary failed
/// sign-in (throttled and audited like any), not a server error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_with_a_nul_is_a_failed_sign_in() {
    on_each_backend("a_name_with_a_nul_is_a_failed_sign_in", |url| async move {
        let store = Store::open(&url).await.unwrap();
        add_user(&store, "ann", "viewer").await;
        let app = app(&store, BackofficeConfig::default(), &Clock::new());
        for name in ["ann\0", "\0", "a\0nn"] {
            let page = Browser::from(&app, "192.0.2.7")
                .sign_in(name, PASSWORD)
                .await;
            assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{name:?}");
            assert!(page.set_cookies().iter().all(|c| !c.contains("lp_session")));
        }
        let log = store
            .audit_page(None, Some("login_failed"), 10)
            .await
            .unwrap();
        assert_eq!(log.len(), 3);
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_do_not_tell_names_apart_and_are_audited() {
    on_each_backend(
        "failed_sign_ins_do_not_tell_names_apart",
        |url| async move {
            let store = Store::open(&url).await.unwrap();
            add_user(&store, "ann", "viewer").await;
            add_user(&store, "bob", "viewer").await;
            store
                .user_set_disabled("bob", true, chrono::Utc::now().timestamp_millis())
                .await
                .unwrap();
            let app = app(&store, BackofficeConfig::default(), &Clock::new());
            let wrong_password = Browser::from(&app, "192.0.2.1")
                .sign_in("ann", "wrong password!")
                .await;
            let unknown_name = Browser::from(&app, "192.0.2.2")
                .sign_in("nobody", PASSWORD)
                .await;
            let disabled = Browser::from(&app, "192.0.2.3")
                .sign_in("bob", PASSWORD)
                .await;
            for page in [&wrong_password, &unknown_name, &disabled] {
                assert_eq!(page.status, StatusCode::UNAUTHORIZED);
                assert_eq!(notice(&page.body), notice(&wrong_password.body));
                assert!(!page.body.contains("nobody") && !page.body.contains("bob"));
                assert!(page.set_cookies().iter().all(|c| !c.contains("lp_session")));
            }
            assert!(notice(&wrong_password.body).contains("Sign-in failed"));
            let log = store
                .audit_page(None, Some("login_failed"), 10)
                .await
                .unwrap();
            let reasons: BTreeMap<String, String> = log
                .iter()
                .map(|r| {
                    let detail: serde_json::Value = serde_json::from_str(&r.detail_json).unwrap();
                    (
                        r.actor.clone(),
                        detail["reason"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            assert_eq!(reasons["ann"], "bad_password");
            assert_eq!(reasons["nobody"], "unknown_user");
            assert_eq!(reasons["bob"], "disabled");
            store.close().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_back_off_per_name_and_per_address() {
    on_each_backend("sign_ins_back_off", |url| async move {
        let store = Store::open(&url).await.unwrap();
        add_user(&store, "ann", "viewer").await;
        add_user(&store, "cid", "viewer").await;
        let clock = Clock::new();
        let app = app(&store, quick_backoff(), &clock);
        // Per name: failures from many addresses lock the name.
        for (i, want) in [StatusCode::UNAUTHORIZED; 3].into_iter().enumerate() {
            let page = Browser::from(&app, &format!("198.51.100.{i}"))
                .sign_in("ann", "bad guess number")
                .await;
            assert_eq!(page.status, want, "attempt {i}");
        }
        // Third failure locked `ann` for 4 s: even the right password waits.
        let locked = Browser::from(&app, "198.51.100.9")
            .sign_in("ann", PASSWORD)
            .await;
        assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(locked.headers[header::RETRY_AFTER], "4");
        assert!(notice(&locked.body).contains("Wait 4 seconds"));
        clock.advance_s(5);
        let fourth = Browser::from(&app, "198.51.100.9")
            .sign_in("ann", "bad guess again!")
            .await;
        assert_eq!(fourth.status, StatusCode::UNAUTHORIZED);
        // The next failure doubles the wait.
        let locked = Browser::from(&app, "198.51.100.8")
            .sign_in("ann", PASSWORD)
            .await;
        assert_eq!(locked.headers[header::RETRY_AFTER], "8");
        clock.advance_s(9);
        let ok = Browser::from(&app, "198.51.100.8")
            .sign_in("ann", PASSWORD)
            .await;
        assert_eq!(ok.status, StatusCode::SEE_OTHER);

        // Per address: one address guessing many names is locked out too,
        // whatever name it tries next.
        for name in ["x1", "x2", "x3"] {
            let page = Browser::from(&app, "203.0.113.5")
                .sign_in(name, "whatever it is")
                .await;
            assert_eq!(page.status, StatusCode::UNAUTHORIZED);
        }
        let page = Browser::from(&app, "203.0.113.5")
            .sign_in("cid", PASSWORD)
            .await;
        assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
        let page = Browser::from(&app, "203.0.113.6")
            .sign_in("cid", PASSWORD)
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER);
        store.close().await;
    })
    .await;
}

/// An IPv6 host picks any interface id in its /64 at will (privacy
/// addresses change by themselves), so per address a guesser would try each
/// name from a fresh address: the address throttle counts the /64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_client_cannot_dodge_the_address_throttle_within_its_64() {
    on_each_backend("ipv6_address_throttle", |url| async move {
        let store = Store::open(&url).await.unwrap();
        add_user(&store, "cid", "viewer").await;
        let app = app(&store, quick_backoff(), &Clock::new());
        for (i, name) in ["x1", "x2", "x3"].into_iter().enumerate() {
            let page = Browser::from(&app, &format!("2001:db8:1:2::{}", i + 1))
                .sign_in(name, "whatever it is")
                .await;
            assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{name}");
        }
        let page = Browser::from(&app, "2001:db8:1:2:aaaa:bbbb:cccc:dddd")
            .sign_in("cid", PASSWORD)
            .await;
        assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
        // The next /64 is another client; the audit keeps whole addresses.
        let page = Browser::from(&app, "2001:db8:1:3::1")
            .sign_in("cid", PASSWORD)
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER);
        let failed = store
            .audit_page(None, Some("login_failed"), 10)
            .await
            .unwrap();
        assert!(failed.iter().any(|r| r.source_ip == "2001:db8:1:2::1"));
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_without_their_token_are_refused() {
    on_each_backend("forms_without_their_token_are_refused", |url| async move {
        let store = Store::open(&url).await.unwrap();
        add_user(&store, "ann", "admin").await;
        let app = app(&store, BackofficeConfig::default(), &Clock::new());
        // The sign-in form needs its own token and cookie.
        let mut fresh = Browser::new(&app);
        let page = fresh
            .post("/login", &[("name", "ann"), ("password", PASSWORD)])
            .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        fresh.get("/login").await;
        let page = fresh
            .post(
                "/login",
                &[("csrf", "forged"), ("name", "ann"), ("password", PASSWORD)],
            )
            .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);

        let mut ann = Browser::new(&app);
        assert_eq!(
            ann.sign_in("ann", PASSWORD).await.status,
            StatusCode::SEE_OTHER
        );
        let csrf = ann.csrf().await;
        let cases: [(&str, Vec<(&str, &str)>); 4] = [
            (
                "/users",
                vec![
                    ("name", "eve"),
                    ("role", "admin"),
                    ("password", PASSWORD),
                    ("again", PASSWORD),
                ],
            ),
            (
                "/users",
                vec![
                    ("csrf", "not-the-token"),
                    ("name", "eve"),
                    ("role", "admin"),
                    ("password", PASSWORD),
                    ("again", PASSWORD),
                ],
            ),
            (
                "/users",
                vec![
                    ("csrf", &csrf),
                    ("csrf", &csrf),
                    ("name", "eve"),
                    ("role", "admin"),
                    ("password", PASSWORD),
                    ("again", PASSWORD),
                ],
            ),
            ("/logout", vec![]),
        ];
        for (path, pairs) in &cases {
            let page = ann.post(path, pairs).await;
            assert_eq!(page.status, StatusCode::FORBIDDEN, "{path} {pairs:?}");
            assert!(page.body.contains("anti-forgery"));
        }
        assert!(store.user_by_name("eve").await.unwrap().is_none());
        // A token from another session does not pass either.
        let mut other = Browser::new(&app);
        other.sign_in("ann", PASSWORD).await;
        let other_csrf = other.csrf().await;
        assert_ne!(other_csrf, csrf);
        let page = ann
            .post(
                "/users",
                &[
                    ("csrf", &other_csrf),
                    ("name", "eve"),
                    ("role", "viewer"),
                    ("password", PASSWORD),
                    ("again", PASSWORD),
                ],
            )
            .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        // With its own token the form works.
        let page = ann
            .post(
                "/users",
                &[
                    ("csrf", &csrf),
                    ("name", "eve"),
                    ("role", "viewer"),
                    ("password", PASSWORD),
                    ("again", PASSWORD),
                ],
            )
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        assert_eq!(
            store.user_by_name("eve").await.unwrap().unwrap().role,
            "viewer"
        );
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_cannot_reach_admin_pages() {
    on_each_backend("viewers_cannot_reach_admin_pages", |url| async move {
        let store = Store::open(&url).await.unwrap();
        add_user(&store, "ann", "admin").await;
        add_user(&store, "vic", "viewer").await;
        let app = app(&store, BackofficeConfig::default(), &Clock::new());
        let mut vic = Browser::new(&app);
        vic.sign_in("vic", PASSWORD).await;
        let home = vic.get("/").await;
        assert!(!home.body.contains("href=\"/config\"") && !home.body.contains("href=\"/audit\""));
        for path in ["/config", "/users", "/audit"] {
            let page = vic.get(path).await;
            assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
            assert!(page.body.contains("Admins only"));
        }
        let csrf = vic.csrf().await;
        for path in [
            "/config/publish",
            "/config/republish",
            "/users",
            "/users/change",
        ] {
            let page = vic
                .post(
                    path,
                    &[
                        ("csrf", &csrf),
                        ("name", "ann"),
                        ("action", "disable"),
                        ("serial", "1"),
                    ],
                )
                .await;
            assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        }
        assert!(!store.user_by_name("ann").await.unwrap().unwrap().disabled);
        let denied = store
            .audit_page(None, Some("access_denied"), 20)
            .await
            .unwrap();
        assert_eq!(denied.len(), 7);
        assert!(denied.iter().all(|r| r.actor == "vic"));

        let mut ann = Browser::new(&app);
        ann.sign_in("ann", PASSWORD).await;
        for path in ["/config", "/users", "/audit"] {
            assert_eq!(ann.get(path).await.status, StatusCode::OK, "{path}");
        }
        let audit = ann.get("/audit?action=access_denied").await;
        assert!(audit.body.contains("vic") && audit.body.contains("/config/publish"));
        // Disabling vic ends vic's session at once.
        let csrf = ann.csrf().await;
        let page = ann
            .post(
                "/users/change",
                &[("csrf", &csrf), ("name", "vic"), ("action", "disable")],
            )
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER);
        assert_eq!(vic.get("/").await.status, StatusCode::SEE_OTHER);
        // An admin cannot lock themselves out here.
        let page = ann
            .post(
                "/users/change",
                &[("csrf", &csrf), ("name", "ann"), ("action", "make_viewer")],
            )
            .await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_in_the_user_forms_say_what_to_fix_and_change_nothing() {
    on_each_backend("user_form_mistakes", |url| async move {
        let store = Store::open(&url).await.unwrap();
        add_user(&store, "ann", "admin").await;
        add_user(&store, "vic", "viewer").await;
        let app = app(&store, BackofficeConfig::default(), &Clock::new());
        let mut ann = Browser::new(&app);
        ann.sign_in("ann", PASSWORD).await;
        let csrf = ann.csrf().await;
        let add = |name: &'static str,
                   role: &'static str,
                   password: &'static str,
                   again: &'static str| {
            vec![
                ("name", name),
                ("role", role),
                ("password", password),
                ("again", again),
            ]
        };
        let cases = [
            (
                "/users",
                add("eve", "root", PASSWORD, PASSWORD),
                "Choose a role",
            ),
            (
                "/users",
                add("eve", "viewer", PASSWORD, "correct horse battery!"),
                "two passwords differ",
            ),
            (
                "/users",
                add("eve", "viewer", "short", "short"),
                "use at least",
            ),
            (
                "/users",
                add("vic", "viewer", PASSWORD, PASSWORD),
                "exists.",
            ),
            // Names differing only in letter case are one name to the
            // sign-in throttle and to a reader of the audit log.
            (
                "/users",
                add("Vic", "admin", PASSWORD, PASSWORD),
                "A user named &quot;vic&quot; exists.",
            ),
            (
                "/users/change",
                vec![("name", "ann"), ("action", "disable")],
                "your own account",
            ),
            (
                "/users/change",
                vec![("name", "zed"), ("action", "disable")],
                "no such user",
            ),
            // PostgreSQL's text holds no NUL: no user, not a server error.
            (
                "/users/change",
                vec![("name", "vic\u{0}"), ("action", "disable")],
                "no such user",
            ),
            (
                "/users/change",
                vec![("name", "vic"), ("action", "promote")],
                "Unknown change",
            ),
        ];
        for (path, mut pairs, says) in cases {
            pairs.push(("csrf", &csrf));
            let page = ann.post(path, &pairs).await;
            assert_eq!(page.status, StatusCode::BAD_REQUEST, "{path} {pairs:?}");
            assert!(page.body.contains(says), "{path} {pairs:?}: {}", page.body);
            // The users page again, with the notice above it.
            assert!(page.body.contains("Users 用户"), "{path} {pairs:?}");
        }
        assert!(store.user_by_name("eve").await.unwrap().is_none());
        let users = store.users().await.unwrap();
        assert_eq!(users.len(), 2);
        assert!(users.iter().all(|u| !u.disabled));
        let vic = store.user_by_name("vic").await.unwrap().unwrap();
        assert_eq!(vic.role, "viewer");
        assert!(
            store
                .audit_page(None, Some("user_add"), 20)
                .await
                .unwrap()
                .is_empty()
        );
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_changes_end_the_sessions_they_outdate() {
    on_each_backend("account_changes_end_sessions", |url| async move {
        let store = Store::open(&url).await.unwrap();
        add_user(&store, "ann", "admin").await;
        let ann = store.user_by_name("ann").await.unwrap().unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        // A sign-in whose password check passed against `hash`.
        let sign_in_as = |token: &'static str, hash: String| {
            let store = store.clone();
            async move {
                store
                    .session_insert(&NewSession {
                        token_hash: token,
                        user_id: ann.id,
                        csrf_token: "csrf",
                        created_at_ms: now,
                        expires_at_ms: now + 3_600_000,
                        source_ip: "192.0.2.1",
                        user_agent: "test",
                        password_hash: &hash,
                    })
                    .await
                    .unwrap()
            }
        };
        let first_hash = ann.password_hash.clone();
        let sign_in = |token: &'static str| sign_in_as(token, first_hash.clone());
        let signed_in = |token: &'static str| {
            let store = store.clone();
            async move { store.session_user(token).await.unwrap().is_some() }
        };

        assert!(sign_in("a").await);
        assert!(store.user_set_role("ann", "viewer", now + 1).await.unwrap());
        assert!(!signed_in("a").await, "a new role ends the session");
        assert!(sign_in("b").await);
        assert!(
            store
                .user_set_password("ann", "new hash", now + 2)
                .await
                .unwrap()
        );
        assert!(!signed_in("b").await, "a new password ends the session");
        // A sign-in checked against the old password, finishing after the
        // change: no session.
        assert!(!sign_in("b2").await);
        assert!(
            !signed_in("b2").await,
            "a session outlived the password change"
        );
        let sign_in = |token: &'static str| sign_in_as(token, "new hash".to_owned());
        assert!(sign_in("c").await);
        assert!(store.user_set_disabled("ann", true, now + 3).await.unwrap());
        assert!(!signed_in("c").await, "disabling ends the session");
        assert!(!sign_in("c2").await, "a disabled account gets no session");
        assert!(
            store
                .user_set_disabled("ann", false, now + 4)
                .await
                .unwrap()
        );
        assert!(sign_in("d").await);
        assert!(
            store
                .user_set_disabled("ann", false, now + 5)
                .await
                .unwrap()
        );
        assert!(signed_in("d").await, "enabling leaves sessions alone");

        let ann = store.user_by_name("ann").await.unwrap().unwrap();
        assert_eq!(
            (ann.role.as_str(), ann.password_hash.as_str(), ann.disabled),
            ("viewer", "new hash", false)
        );
        assert_eq!(ann.updated_at_ms, now + 5);
        // No such account: nothing changes, and the caller is told.
        assert!(!store.user_set_role("nobody", "admin", now).await.unwrap());
        assert!(!store.user_set_password("nobody", "x", now).await.unwrap());
        assert!(!store.user_set_disabled("nobody", true, now).await.unwrap());
        assert!(signed_in("d").await);
        store.close().await;
    })
    .await;
}

/// The `reason` of each audit entry of `action`, oldest first.
async fn audit_reasons(store: &Store, action: &str) -> Vec<String> {
    let mut log = store.audit_page(None, Some(action), 50).await.unwrap();
    log.sort_by_key(|r| r.id);
    log.iter()
        .map(|r| {
            let detail: serde_json::Value = serde_json::from_str(&r.detail_json).unwrap();
            detail["reason"].as_str().unwrap_or("").to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_ones_password_checks_the_current_one_under_the_sign_in_throttle() {
    on_each_backend("own_password_change", |url| async move {
        let store = Store::open(&url).await.unwrap();
        add_user(&store, "ann", "viewer").await;
        add_user(&store, "cid", "viewer").await;
        let clock = Clock::new();
        let app = app(&store, quick_backoff(), &clock);
        let before = store.user_by_name("ann").await.unwrap().unwrap();
        let mut ann = Browser::from(&app, "192.0.2.10");
        assert_eq!(
            ann.sign_in("ann", PASSWORD).await.status,
            StatusCode::SEE_OTHER
        );
        let csrf = ann.csrf().await;
        let new_password = "a much longer new passphrase";
        let change = |current: &'static str, password: &'static str, again: &'static str| {
            vec![
                ("current", current),
                ("password", password),
                ("again", again),
            ]
        };
        let cases = [
            (
                change("not my password", new_password, new_password),
                "current password is wrong",
            ),
            (
                change(PASSWORD, new_password, "a much longer new passphrasE"),
                "two new passwords differ",
            ),
            (change(PASSWORD, "short", "short"), "Not changed: "),
        ];
        for (mut pairs, says) in cases {
            pairs.push(("csrf", &csrf));
            let page = ann.post("/account/password", &pairs).await;
            assert_eq!(page.status, StatusCode::BAD_REQUEST, "{pairs:?}");
            assert!(
                notice(&page.body).contains(says),
                "{pairs:?}: {}",
                page.body
            );
            assert!(page.body.contains("Change your password"));
        }
        // Two more wrong guesses: the address's third failure locks it, as
        // three failed sign-ins would.
        for _ in 0..2 {
            let mut pairs = change("guess, guess, guess", new_password, new_password);
            pairs.push(("csrf", &csrf));
            let page = ann.post("/account/password", &pairs).await;
            assert_eq!(page.status, StatusCode::BAD_REQUEST);
        }
        let mut right = change(PASSWORD, new_password, new_password);
        right.push(("csrf", &csrf));
        let locked = ann.post("/account/password", &right).await;
        assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(locked.headers[header::RETRY_AFTER], "4");
        assert!(
            notice(&locked.body).contains("Wait 4 seconds"),
            "{}",
            locked.body
        );
        // The sign-in form from that address waits as well.
        let page = Browser::from(&app, "192.0.2.10")
            .sign_in("cid", PASSWORD)
            .await;
        assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
        let unchanged = store.user_by_name("ann").await.unwrap().unwrap();
        assert_eq!(unchanged.password_hash, before.password_hash);

        clock.advance_s(5);
        let changed = ann.post("/account/password", &right).await;
        assert_eq!(changed.status, StatusCode::SEE_OTHER, "{}", changed.body);
        assert_eq!(changed.location(), "/login");
        // The change ended the session it was made from.
        let after = ann.get("/account").await;
        assert_eq!(after.status, StatusCode::SEE_OTHER);
        assert!(after.location().starts_with("/login"));
        let mut elsewhere = Browser::from(&app, "198.51.100.20");
        let old = elsewhere.sign_in("ann", PASSWORD).await;
        assert_eq!(old.status, StatusCode::UNAUTHORIZED);
        let new = elsewhere.sign_in("ann", new_password).await;
        assert_eq!(new.status, StatusCode::SEE_OTHER);

        let failed = audit_reasons(&store, "password_change_failed").await;
        let wrong = "bad_current_password";
        assert_eq!(failed, [wrong, wrong, wrong, "throttled"]);
        assert_eq!(audit_reasons(&store, "password_change").await, [""]);
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_enable_users_and_change_their_roles() {
    on_each_backend("admin_user_changes", |url| async move {
        let store = Store::open(&url).await.unwrap();
        add_user(&store, "ann", "admin").await;
        add_user(&store, "vic", "viewer").await;
        let app = app(&store, BackofficeConfig::default(), &Clock::new());
        let mut ann = Browser::new(&app);
        ann.sign_in("ann", PASSWORD).await;
        let csrf = ann.csrf().await;
        let mut vic = Browser::from(&app, "192.0.2.11");
        vic.sign_in("vic", PASSWORD).await;
        assert_eq!(vic.get("/users").await.status, StatusCode::FORBIDDEN);

        let steps = [
            ("make_admin", "Role changed", Some("admin"), false),
            ("make_viewer", "Role changed", Some("viewer"), false),
            ("disable", "User disabled", None, true),
            ("enable", "User enabled", None, false),
        ];
        for (action, says, role, disabled) in steps {
            let page = ann
                .post(
                    "/users/change",
                    &[("name", "vic"), ("action", action), ("csrf", &csrf)],
                )
                .await;
            assert_eq!(page.status, StatusCode::SEE_OTHER, "{action}");
            let shown = ann.get(page.location()).await;
            assert!(
                notice(&shown.body).contains(says),
                "{action}: {}",
                shown.body
            );
            let user = store.user_by_name("vic").await.unwrap().unwrap();
            if let Some(role) = role {
                assert_eq!(user.role, role, "{action}");
            }
            assert_eq!(user.disabled, disabled, "{action}");
        }
        // The promotion ended vic's viewer session; signed in again, vic
        // has the role the last change left.
        assert_eq!(vic.get("/").await.status, StatusCode::SEE_OTHER);
        assert_eq!(
            vic.sign_in("vic", PASSWORD).await.status,
            StatusCode::SEE_OTHER
        );
        assert_eq!(vic.get("/users").await.status, StatusCode::FORBIDDEN);
        let mut log = store.audit_page(None, None, 50).await.unwrap();
        log.sort_by_key(|r| r.id);
        let changes: Vec<(String, String)> = log
            .iter()
            .filter(|r| r.actor == "ann" && r.action.starts_with("user_"))
            .map(|r| {
                let detail: serde_json::Value = serde_json::from_str(&r.detail_json).unwrap();
                (
                    r.action.clone(),
                    detail["change"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let want = [
            ("user_role", "make_admin"),
            ("user_role", "make_viewer"),
            ("user_disable", "disable"),
            ("user_enable", "enable"),
        ];
        assert_eq!(changes, want.map(|(a, c)| (a.to_owned(), c.to_owned())));
        store.close().await;
    })
    .await;
}

/// Two admins demoting each other at the same moment: one change is made,
/// the other refused on the users page saying why, and one enabled admin
/// remains. On PostgreSQL the test holds the session rows each change
/// deletes until both changes wait on a lock, so that their transactions
/// overlap for certain: a last-admin check made apart from the update, or
/// one that does not wait for the other change, lets both through there.
/// On SQLite it holds the write lock a moment, so that both requests are
/// past their sign-in check before either change is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines, reason = "two requests held, then released")]
async fn admins_demoting_each_other_at_once_leave_one_enabled_admin() {
    on_each_backend("admins_demote_each_other", |url| async move {
        let store = Store::open(&url).await.unwrap();
        add_user(&store, "ann", "admin").await;
        add_user(&store, "bob", "admin").await;
        let app = app(&store, BackofficeConfig::default(), &Clock::new());
        let mut ann = Browser::from(&app, "192.0.2.11");
        ann.sign_in("ann", PASSWORD).await;
        let ann_csrf = ann.csrf().await;
        let mut bob = Browser::from(&app, "192.0.2.12");
        bob.sign_in("bob", PASSWORD).await;
        let bob_csrf = bob.csrf().await;

        let postgres = url.starts_with("postgres");
        let mut held_pg = None;
        let mut held_sqlite = None;
        if postgres {
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::raw_sql("BEGIN; SELECT token_hash FROM sessions FOR UPDATE")
                .execute(&mut conn)
                .await
                .unwrap();
            held_pg = Some(conn);
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::raw_sql("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .unwrap();
            held_sqlite = Some(conn);
        }
        let demote = |mut browser: Browser, csrf: String, whom: &'static str| {
            tokio::spawn(async move {
                let form = [
                    ("csrf", csrf.as_str()),
                    ("name", whom),
                    ("action", "make_viewer"),
                ];
                browser.post("/users/change", &form).await
            })
        };
        let by_ann = demote(ann, ann_csrf, "bob");
        let by_bob = demote(bob, bob_csrf, "ann");
        if let Some(mut conn) = held_pg {
            // Each change waits: on the sessions held, or on the other.
            // (Asked on a connection of its own: within a transaction,
            // PostgreSQL shows the activity as it was at the first look.)
            let mut watch = sqlx::PgConnection::connect(&url).await.unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_mins(1);
            loop {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .fetch_one(&mut watch)
                .await
                .unwrap();
                if waiting >= 2 {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the two changes never waited at once ({waiting} waiting)"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            watch.close().await.unwrap();
            sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
        if let Some(mut conn) = held_sqlite {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            assert!(!by_ann.is_finished() && !by_bob.is_finished());
            sqlx::raw_sql("ROLLBACK").execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
        let pages = [by_ann.await.unwrap(), by_bob.await.unwrap()];

        let mut answered: Vec<u16> = pages.iter().map(|p| p.status.as_u16()).collect();
        answered.sort_unstable();
        // On SQLite a request that was slow to start may find its session
        // already ended by the other's change (401): that too leaves one
        // admin, but never both changes made.
        if postgres || answered != [303, 401] {
            assert_eq!(answered, [303, 400]);
        }
        if let Some(refused) = pages.iter().find(|p| p.status == StatusCode::BAD_REQUEST) {
            assert!(
                notice(&refused.body).contains("no enabled admin would be left"),
                "{}",
                refused.body
            );
            assert!(refused.body.contains("Users 用户"));
        }
        // The admin left is the one whose change was made, and only that
        // change is in the audit log.
        let winner = if pages[0].status == StatusCode::SEE_OTHER {
            "ann"
        } else {
            "bob"
        };
        let users = store.users().await.unwrap();
        let admins: Vec<&str> = users
            .iter()
            .filter(|u| u.role == "admin" && !u.disabled)
            .map(|u| u.name.as_str())
            .collect();
        assert_eq!(admins, [winner], "{users:?}");
        let changes = store.audit_page(None, Some("user_role"), 10).await.unwrap();
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].actor, winner);
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_forwarded_client_is_audited_and_throttled() {
    on_each_backend("forwarded_client", |url| async move {
        let store = Store::open(&url).await.unwrap();
        add_user(&store, "ann", "viewer").await;
        let config = BackofficeConfig {
            behind_proxy: true,
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            login_free_failures: 2,
            login_backoff_s: 30,
            ..BackofficeConfig::default()
        };
        let app = app(&store, config, &Clock::new());
        let via_proxy = |client: &str| {
            let mut browser = Browser::from(&app, "10.0.0.5");
            // The client's own claim on the left, the proxies' on the right.
            browser.forwarded_for = Some(format!("192.0.2.99, {client}, 10.0.0.9"));
            browser
        };
        // Three failures of one client behind the proxy lock that client,
        // not the others behind the same proxy.
        for name in ["x1", "x2", "x3"] {
            let page = via_proxy("203.0.113.7").sign_in(name, "wrong, wrong").await;
            assert_eq!(page.status, StatusCode::UNAUTHORIZED);
        }
        let page = via_proxy("203.0.113.7").sign_in("ann", PASSWORD).await;
        assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
        let page = via_proxy("203.0.113.8").sign_in("ann", PASSWORD).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER);

        // Anyone else's header is recorded nowhere and believed by no one.
        let mut liar = Browser::from(&app, "198.51.100.4");
        liar.forwarded_for = Some("203.0.113.8".to_owned());
        let page = liar.sign_in("nobody", "wrong, wrong").await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);

        let mut log = store.audit_page(None, None, 50).await.unwrap();
        log.sort_by_key(|r| r.id);
        let sources: Vec<(&str, &str)> = log
            .iter()
            .map(|r| (r.actor.as_str(), r.source_ip.as_str()))
            .collect();
        assert_eq!(
            sources,
            [
                ("x1", "203.0.113.7"),
                ("x2", "203.0.113.7"),
                ("x3", "203.0.113.7"),
                ("ann", "203.0.113.7"),
                ("ann", "203.0.113.8"),
                ("nobody", "198.51.100.4"),
            ]
        );
        store.close().await;
    })
    .await;
}

/// A proxy's entry that is no bare address (one with a port, or `unknown`)
/// does not hand the choice to what the client wrote left of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_entry_that_is_no_bare_address_does_not_believe_the_client() {
    let db = backoffice_support::TestDb::sqlite();
    let store = Store::open(&db.url).await.unwrap();
    let config = BackofficeConfig {
        behind_proxy: true,
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        ..BackofficeConfig::default()
    };
    let app = app(&store, config, &Clock::new());
    for (forwarded, seen) in [
        // The proxy writes the client's port: still the client it saw.
        ("192.0.2.99, 203.0.113.7:4711", "203.0.113.7"),
        ("192.0.2.99, [2001:db8::7]:4711, 10.0.0.9", "2001:db8::7"),
        // The proxy could not say: the proxy, never the client's claim.
        ("192.0.2.99, unknown", "10.0.0.5"),
        ("192.0.2.99, , 10.0.0.9", "10.0.0.9"),
    ] {
        let mut browser = Browser::from(&app, "10.0.0.5");
        browser.forwarded_for = Some(forwarded.to_owned());
        let page = browser.sign_in("nobody", "wrong, wrong").await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{forwarded}");
        let log = store.audit_page(None, None, 1).await.unwrap();
        assert_eq!(log[0].source_ip, seen, "{forwarded}");
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_when_idle_or_expired() {
    on_each_backend("sessions_end_when_idle_or_expired", |url| async move {
        let store = Store::open(&url).await.unwrap();
        add_user(&store, "ann", "viewer").await;
        let clock = Clock::new();
        let config = BackofficeConfig {
            session_ttl_s: 3600,
            session_idle_s: 600,
            ..BackofficeConfig::default()
        };
        let app = app(&store, config, &clock);
        let mut ann = Browser::new(&app);
        ann.sign_in("ann", PASSWORD).await;
        // Used every 9 minutes, the session lives until its hour is up.
        for _ in 0..6 {
            clock.advance_s(540);
            assert_eq!(ann.get("/").await.status, StatusCode::OK);
        }
        clock.advance_s(540);
        assert_eq!(
            ann.get("/").await.status,
            StatusCode::SEE_OTHER,
            "expired after ttl"
        );
        // Left alone longer than the idle limit, a session ends.
        ann.sign_in("ann", PASSWORD).await;
        assert_eq!(ann.get("/").await.status, StatusCode::OK);
        clock.advance_s(601);
        assert_eq!(ann.get("/").await.status, StatusCode::SEE_OTHER, "idle");
        store.close().await;
    })
    .await;
}

/// Under the shortest idle limit (a minute), a session used every 40 s
/// stays signed in: each use counts, though uses are written sparingly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_in_use_outlives_a_short_idle_limit() {
    on_each_backend(
        "a_session_in_use_outlives_a_short_idle_limit",
        |url| async move {
            let store = Store::open(&url).await.unwrap();
            add_user(&store, "ann", "viewer").await;
            let clock = Clock::new();
            let config = BackofficeConfig {
                session_ttl_s: 3600,
                session_idle_s: 60,
                ..BackofficeConfig::default()
            };
            let app = app(&store, config, &clock);
            let mut ann = Browser::new(&app);
            ann.sign_in("ann", PASSWORD).await;
            for round in 0..6 {
                clock.advance_s(40);
                assert_eq!(ann.get("/account").await.status, StatusCode::OK, "{round}");
            }
            clock.advance_s(61);
            assert_eq!(
                ann.get("/account").await.status,
                StatusCode::SEE_OTHER,
                "idle"
            );
            store.close().await;
        },
    )
    .await;
}

/// A verdict stored before the compact evidence document (version 1, no
/// `v`, sources repeated per attribute) shows the same case page as the
/// document the pipeline writes now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_stored_with_the_old_evidence_shape_reads_the_same() {
    on_each_backend(
        "a_case_stored_with_the_old_evidence_shape_reads_the_same",
        |url| async move {
            let store = Store::open(&url).await.unwrap();
            seed_demo(&store).await;
            add_user(&store, "vic", "viewer").await;
            let app = app(&store, BackofficeConfig::default(), &Clock::new());
            let mut vic = Browser::new(&app);
            vic.sign_in("vic", PASSWORD).await;
            let path = "/case?line=account%3A07552660505";
            let now = vic.get_old_case_link(path).await;
            assert_eq!(now.status, StatusCode::OK);
            let verdicts = store.line_verdicts("account:07552660505").await.unwrap();
            assert!(!verdicts.is_empty());
            for v in &verdicts {
                let stored: serde_json::Value =
                    serde_json::from_str(&v.record.evidence_json).unwrap();
                assert_eq!(stored["v"], lineprobe_sync::EVIDENCE_VERSION);
                let old = lineprobe_sync::expand_evidence(stored);
                assert!(old.get("v").is_none() && old.get("sources").is_none());
                assert!(old["public_hops"][0]["resolved"]["carrier"]["source"].is_string());
                let text = old.to_string();
                assert!(text.len() > v.record.evidence_json.len());
                if url.starts_with("postgres") {
                    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                    sqlx::query("UPDATE verdicts SET evidence = $1 WHERE id = $2")
                        .bind(&text)
                        .bind(v.id)
                        .execute(&mut conn)
                        .await
                        .unwrap();
                    conn.close().await.unwrap();
                } else {
                    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                    sqlx::query("UPDATE verdicts SET evidence = ?1 WHERE id = ?2")
                        .bind(&text)
                        .bind(v.id)
                        .execute(&mut conn)
                        .await
                        .unwrap();
                    conn.close().await.unwrap();
                }
            }
            let old = vic.get_old_case_link(path).await;
            assert_eq!(old.status, StatusCode::OK);
            for want in [
                "carrier_mismatch",
                "first public hop",
                "113.116.32.1",
                "regions demo-2026.11",
                "the subscriber",
            ] {
                assert!(old.body.contains(want), "case view lacks {want}");
            }
            assert_eq!(old.body, now.body);
            store.close().await;
        },
    )
    .await;
}

/// Source trust: the demo's collector trusted every report; a line whose
/// current verdict came from a low-trust source is listed apart by the
/// trust filter and marked wherever it shows.
async fn check_trust_filter(vic: &mut Browser, url: &str) {
    let low = vic.get("/lines?trust=low").await;
    assert!(low.body.contains("No line matches"), "{}", low.body);
    let normal = vic.get("/lines?trust=normal").await;
    assert_eq!(normal.body.matches("href=\"/case?line=").count(), 10);
    let mark = "UPDATE lines SET low_trust = TRUE WHERE line_key = 'account:07552660505'";
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(mark).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    } else {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(mark).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    }
    let low = vic.get("/lines?trust=low").await;
    assert_eq!(low.body.matches("href=\"/case?line=").count(), 1);
    assert!(low.body.contains("account:07552660505"));
    assert!(
        low.body.contains("class=\"badge low-trust\""),
        "{}",
        low.body
    );
    let all = vic.get("/lines").await;
    assert_eq!(
        all.body.matches("class=\"badge low-trust\"").count(),
        1,
        "one marked line"
    );
    let bad = vic.get("/lines?trust=maybe").await;
    assert!(bad.body.contains("is not a trust level"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_show_the_lines() {
    on_each_backend("the_pages_show_the_lines", |url| async move {
        let store = Store::open(&url).await.unwrap();
        seed_demo(&store).await;
        add_user(&store, "vic", "viewer").await;
        let app = app(&store, BackofficeConfig::default(), &Clock::new());
        let mut vic = Browser::new(&app);
        vic.sign_in("vic", PASSWORD).await;

        let home = vic.get("/").await;
        assert_eq!(home.status, StatusCode::OK);
        // 10 lines, 6 compliant of 9 determinate, one quarantined, the
        // collector's pull status.
        assert!(
            home.body.contains("<div class=\"big\">10</div>"),
            "{}",
            home.body
        );
        assert!(home.body.contains("66.7 %"));
        assert!(home.body.contains("demo-dmz-1"));
        assert!(home.body.contains("<svg"));
        assert!(home.body.contains("中国移动"));

        let lines = vic.get("/lines").await;
        assert_eq!(lines.body.matches("href=\"/case?line=").count(), 10);
        let filtered = vic.get("/lines?verdict=non_compliant").await;
        assert_eq!(filtered.body.matches("href=\"/case?line=").count(), 1);
        assert!(filtered.body.contains("account:07552660505"));
        assert!(filtered.body.contains("carrier_mismatch"));
        let by_place = vic.get("/lines?province=CN-GD&carrier=china_mobile").await;
        assert_eq!(
            by_place.body.matches("href=\"/case?line=").count(),
            3,
            "{}",
            by_place.body
        );
        let by_city = vic.get("/lines?city=%E6%B7%B1%E5%9C%B3").await; // 深圳
        assert_eq!(by_city.body.matches("href=\"/case?line=").count(), 2);
        let by_actual = vic.get("/lines?actual=china_telecom").await;
        assert_eq!(by_actual.body.matches("href=\"/case?line=").count(), 5);
        let future = vic.get("/lines?from=2999-01-01").await;
        assert!(future.body.contains("No line matches"));
        let bad = vic.get("/lines?verdict=guilty").await;
        assert!(bad.body.contains("is not a verdict"));

        check_trust_filter(&mut vic, &url).await;

        let case = vic
            .get_old_case_link("/case?line=account%3A07552660505")
            .await;
        assert_eq!(case.status, StatusCode::OK);
        for want in [
            "carrier_mismatch",
            "中国移动",
            "中国电信",
            "the subscriber",
            "first public hop",
            "private",
            "113.116.32.1",
            "regions demo-2026.11",
            "Reasons",
            "History",
        ] {
            assert!(case.body.contains(want), "case view lacks {want}");
        }
        assert_eq!(
            vic.get_old_case_link("/case?line=account%3Anobody")
                .await
                .status,
            StatusCode::NOT_FOUND
        );

        let quarantine = vic.get("/quarantine").await;
        assert!(quarantine.body.contains("SZ-LG-001010"));
        assert!(quarantine.body.contains("trace.hops"));
        let probes = vic.get("/probes").await;
        assert!(probes.body.contains("GZ-YX-000606"));
        assert!(probes.body.contains("unprivileged") || probes.body.contains("trippy"));
        let one = vic.get("/probes?install=GZ-YX-000606").await;
        assert_eq!(one.body.matches("href=\"/case?line=").count(), 1);

        let csv = vic.get("/lines/export.csv?verdict=compliant").await;
        assert_eq!(csv.status, StatusCode::OK);
        assert!(
            csv.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
        assert!(
            csv.headers[header::CONTENT_DISPOSITION]
                .to_str()
                .unwrap()
                .starts_with("attachment")
        );
        let text = csv.body.strip_prefix('\u{feff}').unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(&reader.headers().unwrap()[0], "line");
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 6);
        assert!(rows.iter().all(|r| &r[3] == "compliant"));
        let export = store.audit_page(None, Some("export_csv"), 5).await.unwrap();
        assert_eq!(export.len(), 1);
        assert_eq!(export[0].actor, "vic");
        assert!(export[0].detail_json.contains("\"verdict\":\"compliant\""));

        store.close().await;
    })
    .await;
}

/// The lines export as an Excel workbook: the CSV export's lines and cells,
/// typed; audited as an export of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_excel_export_holds_the_csv_exports_cells_typed() {
    on_each_backend("excel_export", |url| async move {
        let store = Store::open(&url).await.unwrap();
        seed_demo(&store).await;
        add_user(&store, "vic", "viewer").await;
        let app = app(&store, BackofficeConfig::default(), &Clock::new());
        let mut vic = Browser::new(&app);
        vic.sign_in("vic", PASSWORD).await;
        let csv = vic.get("/lines/export.csv?verdict=compliant").await;
        let text = csv.body.strip_prefix('\u{feff}').unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 6);
        let book = vic.get("/lines/export.xlsx?verdict=compliant").await;
        let csv_header: Vec<String> = reader
            .headers()
            .unwrap()
            .iter()
            .map(str::to_owned)
            .collect();
        check_workbook_matches_csv(&book, &csv_header, &rows);
        let export = store
            .audit_page(None, Some("export_xlsx"), 5)
            .await
            .unwrap();
        assert_eq!(export.len(), 1);
        assert!(export[0].detail_json.contains("\"verdict\":\"compliant\""));
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_filled_from_the_actual_ones_are_marked_in_the_list_and_the_export() {
    on_each_backend("filled_values_are_marked", |url| async move {
        let store = Store::open(&url).await.unwrap();
        seed_demo(&store).await;
        seed_filled(&store, "07559990001").await;
        add_user(&store, "vic", "viewer").await;
        let app = app(&store, BackofficeConfig::default(), &Clock::new());
        let mut vic = Browser::new(&app);
        vic.sign_in("vic", PASSWORD).await;

        // The filled line's declared cell marks its province and city (not
        // its carrier, which the subscriber declared); no other line is
        // marked.
        let lines = vic.get("/lines?province=CN-GD&carrier=china_mobile").await;
        let row = |key: &str| {
            let at = lines.body.find(&format!(">{key}</a>")).unwrap();
            let end = at + lines.body[at..].find("</tr>").unwrap();
            lines.body[at..end].to_owned()
        };
        let filled = row("account:07559990001");
        assert_eq!(
            filled.matches("<sup class=\"filled\"").count(),
            2,
            "{filled}"
        );
        assert!(
            filled.contains("中国移动 · 广东省<sup"),
            "the carrier was declared: {filled}"
        );
        assert!(!row("account:07552660101").contains("<sup"));
        assert_eq!(lines.body.matches("<sup class=\"filled\"").count(), 2);
        assert!(
            lines
                .body
                .contains("not declared: filled from the actual value")
        );
        let others = vic.get("/lines?verdict=non_compliant").await;
        assert!(!others.body.contains("filled from the actual value"));

        let csv = vic.get("/lines/export.csv?province=CN-GD").await;
        let text = csv.body.strip_prefix('\u{feff}').unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader.headers().unwrap().clone();
        let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
        let (line, filled) = (column("line"), column("filled"));
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        for r in &rows {
            let want = if &r[line] == "account:07559990001" {
                "province city"
            } else {
                ""
            };
            assert_eq!(&r[filled], want, "{r:?}");
        }
        assert!(rows.iter().any(|r| &r[line] == "account:07559990001"));
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyset_pages_and_the_export_cover_every_line_once() {
    on_each_backend("keyset_pages_cover_every_line_once", |url| async move {
        let store = Store::open(&url).await.unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        seed_synthetic(&url, 137, now).await;
        add_user(&store, "vic", "viewer").await;
        let config = BackofficeConfig {
            page_size: 10,
            ..BackofficeConfig::default()
        };
        let app = app(&store, config, &Clock::new());
        let mut vic = Browser::new(&app);
        vic.sign_in("vic", PASSWORD).await;
        // Without the dashboard's counts a page does not say how many match.
        let uncounted = vic.get("/lines").await;
        assert!(
            !uncounted.body.contains("137"),
            "no total before the counts"
        );
        assert!(
            vic.get("/")
                .await
                .body
                .contains("<div class=\"big\">137</div>")
        );
        let mut seen = Vec::new();
        let mut next = Some("/lines".to_owned());
        let mut pages = 0;
        while let Some(path) = next.take() {
            let page = vic.get(&path).await;
            pages += 1;
            assert!(page.body.contains("137 lines matched at"), "{path}");
            for part in page.body.split("href=\"/case?line=").skip(1) {
                seen.push(part[..part.find('"').unwrap()].to_owned());
            }
            next = page.body.split("<a href=\"").skip(1).find_map(|a| {
                let (href, rest) = a.split_once('"')?;
                rest.starts_with(">Next page")
                    .then(|| href.replace("&amp;", "&"))
            });
        }
        assert_eq!(pages, 14);
        let unique: std::collections::BTreeSet<_> = seen.iter().collect();
        assert_eq!((seen.len(), unique.len()), (137, 137));
        let csv = vic.get("/lines/export.csv").await;
        assert_eq!(csv.body.lines().count(), 138);
        // Totals of filtered lists come from the same counts.
        for filter in [
            "verdict=compliant",
            "verdict=compliant&carrier=china_mobile&actual=china_mobile",
            "province=CN-GD",
        ] {
            let exported = vic.get(&format!("/lines/export.csv?{filter}")).await;
            let want = exported.body.lines().count() - 1;
            let page = vic.get(&format!("/lines?{filter}")).await;
            assert!(
                page.body.contains(&format!("{want} lines matched at")),
                "{filter}: {want}"
            );
        }
        // City and date filters are not counted ahead: only what is shown.
        let dated = vic.get("/lines?from=2000-01-01").await;
        assert!(!dated.body.contains("matched at"));
        store.close().await;
    })
    .await;
}

/// The dashboard's "(not declared)" rows lead to the lines they count (they
/// linked to the unfiltered list), and an export cut at `export_max_rows`
/// says so in its last row (it read as every line the filters select).
#[tokio::test]
async fn not_declared_links_select_their_lines_and_a_cut_export_says_so() {
    on_each_backend("not_declared_and_cut_export", |url| async move {
        let store = Store::open(&url).await.unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        seed_synthetic(&url, 60, now).await;
        execute_all(
            &url,
            &[
                "UPDATE lines SET declared_carrier = NULL WHERE line_key IN \
                 (SELECT line_key FROM lines ORDER BY line_key LIMIT 7)"
                    .to_owned(),
                "UPDATE lines SET declared_province = NULL, declared_city = NULL \
                 WHERE line_key IN (SELECT line_key FROM lines ORDER BY line_key DESC LIMIT 5)"
                    .to_owned(),
            ],
        )
        .await;
        add_user(&store, "vic", "viewer").await;
        let config = BackofficeConfig {
            export_max_rows: 25,
            ..BackofficeConfig::default()
        };
        let app = app(&store, config, &Clock::new());
        let mut vic = Browser::new(&app);
        vic.sign_in("vic", PASSWORD).await;
        let dashboard = vic.get("/").await.body;
        for (key, n) in [("carrier", 7), ("province", 5)] {
            let link = format!("/lines?{key}=none");
            assert!(
                dashboard.contains(&format!("href=\"{link}\"")),
                "no {link} link on the dashboard"
            );
            let page = vic.get(&link).await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.body);
            assert!(
                page.body.contains(&format!("{n} lines matched at")),
                "{link}: {}",
                page.body
            );
            assert_eq!(page.body.matches("href=\"/case?line=").count(), n, "{link}");
            let csv = vic.get(&format!("/lines/export.csv?{key}=none")).await.body;
            assert_eq!(csv.lines().count(), n + 1, "{key}: {csv}");
            assert!(!csv.contains("export cut"), "{csv}");
        }
        // 60 lines, 25 exported, and a last row that says the file is cut.
        let csv = vic.get("/lines/export.csv").await.body;
        let rows: Vec<&str> = csv.lines().collect();
        assert_eq!(rows.len(), 1 + 25 + 1, "{csv}");
        let last = rows.last().unwrap();
        assert!(
            last.starts_with("# export cut at 25 lines (export_max_rows)"),
            "{last}"
        );
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        let widths: Vec<usize> = reader.records().map(|r| r.unwrap().len()).collect();
        assert!(widths.iter().all(|w| *w == 24), "{widths:?}");
        check_cut_workbook(&mut vic, &store).await;
        // A HEAD (a link checker, a download manager) runs no export and is
        // not audited as one; axum answers it with the GET handler.
        let audited = store
            .audit_page(None, Some("export_csv"), 50)
            .await
            .unwrap();
        let head = vic.send(Method::HEAD, "/lines/export.csv", None).await;
        assert_eq!(head.status, StatusCode::OK);
        assert!(head.body.is_empty());
        let after = store
            .audit_page(None, Some("export_csv"), 50)
            .await
            .unwrap();
        assert_eq!(
            after.len(),
            audited.len(),
            "a HEAD was audited as an export"
        );
        // Exactly as many lines as the limit: nothing is cut, nothing said.
        let exact = app_with_max(&store, 60);
        let mut vic = Browser::new(&exact);
        vic.sign_in("vic", PASSWORD).await;
        let csv = vic.get("/lines/export.csv").await.body;
        assert_eq!(csv.lines().count(), 61);
        assert!(!csv.contains("export cut"));
        store.close().await;
    })
    .await;
}

/// The lines export's workbook holds the CSV export's cells, typed: text
/// as text (an account keeps its leading zero), counts as numbers, times as
/// dates (to the second, in the back office's offset), yes/no as booleans.
fn check_workbook_matches_csv(book: &Page, csv_header: &[String], rows: &[csv::StringRecord]) {
    use calamine::{Data, DataType as _};
    assert_eq!(book.status, StatusCode::OK, "{}", book.body);
    assert_eq!(
        book.headers[header::CONTENT_TYPE],
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    let name = book.headers[header::CONTENT_DISPOSITION].to_str().unwrap();
    assert!(
        name.starts_with("attachment") && name.ends_with(".xlsx\""),
        "{name}"
    );
    let cells = xlsx_lines(&book.bytes);
    assert_eq!(cells.len(), rows.len() + 1);
    let header: Vec<String> = cells[0].iter().map(ToString::to_string).collect();
    assert_eq!(header, csv_header);
    for (row, csv_row) in cells[1..].iter().zip(rows) {
        for ((column, cell), csv_cell) in header.iter().zip(row).zip(csv_row) {
            match cell {
                Data::String(text) => assert_eq!(text, csv_cell, "{column}"),
                Data::Float(x) => {
                    assert_eq!(csv_cell.parse::<f64>().ok(), Some(*x), "{column}");
                }
                Data::Bool(b) => assert_eq!(b.to_string(), csv_cell, "{column}"),
                Data::DateTime(_) => {
                    let csv_time = chrono::DateTime::parse_from_rfc3339(csv_cell).unwrap();
                    assert_eq!(cell.as_datetime(), Some(csv_time.naive_local()), "{column}");
                }
                Data::Empty => assert_eq!(csv_cell, "", "{column}"),
                other => panic!("{column}: {other:?}"),
            }
        }
    }
    let account = header.iter().position(|h| h == "account").unwrap();
    assert!(
        cells[1..]
            .iter()
            .any(|r| r[account] == Data::String("07552660101".to_owned())),
        "an account keeps its leading zero: {cells:?}"
    );
}

/// The lines export's workbook, cut at 25 of 60 lines, says so in its last
/// row; a HEAD makes none and is not audited.
async fn check_cut_workbook(vic: &mut Browser, store: &Store) {
    let book = vic.get("/lines/export.xlsx").await;
    let cells = xlsx_lines(&book.bytes);
    assert_eq!(cells.len(), 1 + 25 + 1);
    assert!(
        cells[26][0]
            .to_string()
            .starts_with("# export cut at 25 lines (export_max_rows)"),
        "{:?}",
        cells[26]
    );
    let head = vic.send(Method::HEAD, "/lines/export.xlsx", None).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    let audited = store.audit_page(None, Some("export_xlsx"), 50).await;
    assert_eq!(audited.unwrap().len(), 1, "only the GET is audited");
}

/// The rows of the lines export's workbook, as calamine reads them.
fn xlsx_lines(bytes: &[u8]) -> Vec<Vec<calamine::Data>> {
    use calamine::Reader as _;
    let mut book: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(bytes.to_vec())).unwrap();
    assert_eq!(book.sheet_names(), ["lines"]);
    let range = book.worksheet_range("lines").unwrap();
    range.rows().map(<[calamine::Data]>::to_vec).collect()
}

fn app_with_max(store: &Store, export_max_rows: u32) -> Router {
    let config = BackofficeConfig {
        export_max_rows,
        ..BackofficeConfig::default()
    };
    app(store, config, &Clock::new())
}

/// The answers to POSTs of `forms` to `path` sent at once, each on its own
/// task, by copies of `browser` (same cookies, same address).
async fn at_once(browser: &Browser, path: &str, forms: Vec<Vec<(String, String)>>) -> Vec<Page> {
    let tasks = forms.into_iter().map(|pairs| {
        let mut copy = Browser {
            router: browser.router.clone(),
            cookies: browser.cookies.clone(),
            ip: browser.ip,
            forwarded_for: browser.forwarded_for.clone(),
        };
        let path = path.to_owned();
        tokio::spawn(async move {
            let pairs: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            copy.post(&path, &pairs).await
        })
    });
    futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

/// How many answers had each status.
fn statuses(pages: &[Page]) -> BTreeMap<u16, usize> {
    let mut counts = BTreeMap::new();
    for page in pages {
        *counts.entry(page.status.as_u16()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_guesses_each_count_and_only_the_free_ones_are_checked() {
    on_each_backend("concurrent_wrong_guesses", |url| async move {
        let store = Store::open(&url).await.unwrap();
        add_user(&store, "ann", "viewer").await;
        let clock = Clock::new();
        let config = BackofficeConfig {
            login_free_failures: 1,
            login_backoff_s: 4,
            login_backoff_max_s: 60,
            ..BackofficeConfig::default()
        };
        let app = app(&store, config, &clock);
        // A wave of 20 guesses sent together: one free failure, and the
        // failure that locks the name; every other guess waits.
        let mut attacker = Browser::from(&app, "203.0.113.66");
        let csrf = attacker.get("/login").await.csrf();
        let forms = (0..20)
            .map(|i| {
                vec![
                    ("csrf".to_owned(), csrf.clone()),
                    ("name".to_owned(), "ann".to_owned()),
                    ("password".to_owned(), format!("guess number {i}")),
                    ("next".to_owned(), "/".to_owned()),
                ]
            })
            .collect();
        let pages = at_once(&attacker, "/login", forms).await;
        assert_eq!(
            statuses(&pages),
            BTreeMap::from([(401, 2), (429, 18)]),
            "20 guesses at once"
        );
        assert!(
            pages
                .iter()
                .filter(|p| p.status == StatusCode::TOO_MANY_REQUESTS)
                .all(|p| p.headers[header::RETRY_AFTER] == "4")
        );
        // Every checked guess is counted, against the name and the address.
        for key in ["user:ann", "addr:203.0.113.66"] {
            let state = store.throttle_state(key).await.unwrap().unwrap();
            assert_eq!(state.failures, 2, "{key}");
        }
        let reasons = audit_reasons(&store, "login_failed").await;
        assert_eq!(reasons.iter().filter(|r| *r == "bad_password").count(), 2);
        assert_eq!(reasons.iter().filter(|r| *r == "throttled").count(), 18);

        // Once the lock has passed, the right password signs in and clears
        // the name's count; the address keeps its two failures (a success
        // is not one of them).
        clock.advance_s(5);
        let mut ann = Browser::from(&app, "203.0.113.66");
        assert_eq!(
            ann.sign_in("ann", PASSWORD).await.status,
            StatusCode::SEE_OTHER
        );
        assert!(store.throttle_state("user:ann").await.unwrap().is_none());
        let address = store
            .throttle_state("addr:203.0.113.66")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(address.failures, 2);

        // The password change is the same check under the same keys: a
        // wave of wrong current passwords from the signed-in session.
        let mut ann = Browser::from(&app, "198.51.100.66");
        assert_eq!(
            ann.sign_in("ann", PASSWORD).await.status,
            StatusCode::SEE_OTHER
        );
        let csrf = ann.csrf().await;
        let forms = (0..10)
            .map(|i| {
                vec![
                    ("csrf".to_owned(), csrf.clone()),
                    ("current".to_owned(), format!("guess number {i}")),
                    (
                        "password".to_owned(),
                        "a much longer new passphrase".to_owned(),
                    ),
                    (
                        "again".to_owned(),
                        "a much longer new passphrase".to_owned(),
                    ),
                ]
            })
            .collect();
        let pages = at_once(&ann, "/account/password", forms).await;
        assert_eq!(
            statuses(&pages),
            BTreeMap::from([(400, 2), (429, 8)]),
            "10 password changes at once"
        );
        let user = store.throttle_state("user:ann").await.unwrap().unwrap();
        assert_eq!(user.failures, 2);
        store.close().await;
    })
    .await;
}

/// An older database may hold two accounts whose names differ only by
/// letter case (new ones are refused): each has a sign-in throttle of its
/// own, while names matching no account share one key per lower-cased
/// name, and a name with no such twin shares its key with its case
/// variants as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines, reason = "one story, step by step")]
async fn accounts_differing_only_by_case_are_throttled_apart() {
    on_each_backend("case_pair_throttle", |url| async move {
        let store = Store::open(&url).await.unwrap();
        add_user(&store, "ann", "viewer").await;
        add_user(&store, "bob", "viewer").await;
        // As an older version let it be made.
        let hash = hash_password(PASSWORD).unwrap();
        execute_all(
            &url,
            &[format!(
                "INSERT INTO users (name, role, password_hash, disabled, created_at, \
                 updated_at) VALUES ('Ann', 'viewer', '{hash}', FALSE, 0, 0)"
            )],
        )
        .await;
        let big_ann = store.user_by_name("Ann").await.unwrap().unwrap().id;
        let ann = store.user_by_name("ann").await.unwrap().unwrap().id;
        let clock = Clock::new();
        let app = app(&store, quick_backoff(), &clock);
        // Every attempt from an address of its own: only the names' keys
        // count here.
        let mut next_ip = 0;
        let mut sign_in = async |name: &str, password: &str| {
            next_ip += 1;
            let mut browser = Browser::from(&app, &format!("203.0.113.{next_ip}"));
            browser.sign_in(name, password).await.status
        };
        let (refused, locked, signed_in) = (
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::SEE_OTHER,
        );

        // Guessing Ann's password locks Ann, not ann.
        assert_eq!(sign_in("Ann", "guess number 1").await, refused);
        assert_eq!(sign_in("Ann", "guess number 2").await, refused);
        assert_eq!(sign_in("Ann", "guess number 3").await, refused);
        assert_eq!(sign_in("Ann", PASSWORD).await, locked);
        assert_eq!(sign_in("ann", PASSWORD).await, signed_in);
        let own = store
            .throttle_state(&format!("account:{big_ann}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(own.failures, 3);
        assert!(store.throttle_state("user:ann").await.unwrap().is_none());

        // Ann's right password clears Ann's failures only: ann's stay.
        clock.advance_s(5);
        assert_eq!(sign_in("ann", "guess number 4").await, refused);
        assert_eq!(sign_in("ann", "guess number 5").await, refused);
        assert_eq!(sign_in("ann", "guess number 6").await, refused);
        assert_eq!(sign_in("Ann", PASSWORD).await, signed_in);
        assert_eq!(sign_in("ann", PASSWORD).await, locked);
        let own = store
            .throttle_state(&format!("account:{ann}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(own.failures, 3);
        assert!(
            store
                .throttle_state(&format!("account:{big_ann}"))
                .await
                .unwrap()
                .is_none()
        );

        // Case variants that are no account share one key, which locks
        // neither account.
        clock.advance_s(5);
        assert_eq!(sign_in("ANN", "guess number 7").await, refused);
        assert_eq!(sign_in("aNN", "guess number 8").await, refused);
        assert_eq!(sign_in("AnN", "guess number 9").await, refused);
        assert_eq!(sign_in("anN", "guess number 10").await, locked);
        let shared = store.throttle_state("user:ann").await.unwrap().unwrap();
        assert_eq!(shared.failures, 3);
        assert_eq!(sign_in("ann", PASSWORD).await, signed_in);
        assert_eq!(sign_in("Ann", PASSWORD).await, signed_in);

        // A name without a twin keeps one key with its case variants:
        // guessing by case meets the account's backoff.
        assert_eq!(sign_in("BOB", "guess number 11").await, refused);
        assert_eq!(sign_in("Bob", "guess number 12").await, refused);
        assert_eq!(sign_in("bOB", "guess number 13").await, refused);
        assert_eq!(sign_in("bob", PASSWORD).await, locked);
        let bob = store.throttle_state("user:bob").await.unwrap().unwrap();
        assert_eq!(bob.failures, 3);
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_checks_beyond_the_limit_are_shed_and_not_counted() {
    on_each_backend("password_checks_are_shed", |url| async move {
        let store = Store::open(&url).await.unwrap();
        add_user(&store, "ann", "viewer").await;
        // No password check may run at all: every one waits its short
        // while in the queue, then is turned away.
        let state = BackofficeState::with_parts(
            quick_backoff(),
            store.clone(),
            Arc::new(Catalog::embedded().unwrap()),
            Classifier::new(&ClassifierConfig::default()).unwrap(),
            Vec::new(),
            None,
        )
        .with_password_checks(0, std::time::Duration::from_millis(20));
        let app = backoffice_router(state);
        let mut ann = Browser::from(&app, "192.0.2.44");
        for _ in 0..4 {
            let page = ann.sign_in("ann", PASSWORD).await;
            assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(page.headers[header::RETRY_AFTER], "5");
            assert!(notice(&page.body).contains("busy"), "{}", page.body);
        }
        // Turned away unchecked, none of them is a failure: four would
        // have locked the name and the address.
        for key in ["user:ann", "addr:192.0.2.44"] {
            let failures = store
                .throttle_state(key)
                .await
                .unwrap()
                .map_or(0, |s| s.failures);
            assert_eq!(failures, 0, "{key}");
        }
        assert_eq!(
            audit_reasons(&store, "login_failed").await,
            ["busy", "busy", "busy", "busy"]
        );
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trust_filter_does_not_claim_the_count_of_every_line() {
    on_each_backend("trust_filter_count", |url| async move {
        let store = Store::open(&url).await.unwrap();
        seed_synthetic(&url, 37, chrono::Utc::now().timestamp_millis()).await;
        add_user(&store, "vic", "viewer").await;
        let config = BackofficeConfig {
            page_size: 10,
            ..BackofficeConfig::default()
        };
        let app = app(&store, config, &Clock::new());
        let mut vic = Browser::new(&app);
        vic.sign_in("vic", PASSWORD).await;
        // The dashboard's counts exist, and count every line.
        assert!(
            vic.get("/")
                .await
                .body
                .contains("<div class=\"big\">37</div>")
        );
        assert!(vic.get("/lines").await.body.contains("37 lines matched at"));
        // They do not split by trust: no line is of low trust, and the
        // normal ones run over several pages; neither may claim 37.
        let low = vic.get("/lines?trust=low").await;
        assert!(low.body.contains("No line matches"), "{}", low.body);
        assert!(!low.body.contains("matched at"), "{}", low.body);
        assert!(low.body.contains("0 lines match"), "{}", low.body);
        let normal = vic.get("/lines?trust=normal").await;
        assert_eq!(normal.body.matches("href=\"/case?line=").count(), 10);
        assert!(!normal.body.contains("matched at"), "{}", normal.body);
        store.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_line_number_in_the_query_does_not_break_the_lines_page() {
    on_each_backend("absurd_line_number", |url| async move {
        let store = Store::open(&url).await.unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        seed_synthetic(&url, 15, now).await;
        add_user(&store, "vic", "viewer").await;
        let config = BackofficeConfig {
            page_size: 10,
            ..BackofficeConfig::default()
        };
        let app = app(&store, config, &Clock::new());
        let mut vic = Browser::new(&app);
        vic.sign_in("vic", PASSWORD).await;
        let max = u64::MAX;
        // The first page (a full one, with a next page) and a page after a
        // cursor, each claiming to start after the largest line number.
        let cursor = format!("{}.account:zzz", now + 1);
        for path in [
            format!("/lines?n={max}"),
            format!("/lines?after={cursor}&n={max}"),
        ] {
            let page = vic.get(&path).await;
            assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
            assert_eq!(
                page.body.matches("href=\"/case?line=").count(),
                10,
                "{path}"
            );
            let next = page
                .body
                .split("<a href=\"")
                .skip(1)
                .find_map(|a| {
                    let (href, rest) = a.split_once('"')?;
                    rest.starts_with(">Next page")
                        .then(|| href.replace("&amp;", "&"))
                })
                .unwrap();
            let after = vic.get(&next).await;
            assert_eq!(after.status, StatusCode::OK, "{next}");
            assert_eq!(after.body.matches("href=\"/case?line=").count(), 5);
        }
        store.close().await;
    })
    .await;
}

/// A NUL character in a query value (a typo'd or hostile URL) matches no
/// line on either backend, and says so: PostgreSQL's text holds no NUL, and
/// sent to it as a parameter the value failed the whole query (a 500, and
/// an export cut off after its headers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_the_query_is_refused_not_a_server_error() {
    on_each_backend("nul_in_the_query", |url| async move {
        let store = Store::open(&url).await.unwrap();
        seed_demo(&store).await;
        add_user(&store, "vic", "viewer").await;
        let app = app(&store, BackofficeConfig::default(), &Clock::new());
        let mut vic = Browser::new(&app);
        vic.sign_in("vic", PASSWORD).await;

        let city = vic.get("/lines?city=%00").await;
        assert_eq!(city.status, StatusCode::OK, "{}", city.body);
        assert!(
            notice(&city.body).contains("is not a city"),
            "{}",
            city.body
        );
        // The filter is not applied: every line is listed.
        assert_eq!(city.body.matches("href=\"/case?line=").count(), 10);

        let after = vic.get("/lines?after=1.account%3A%00&n=50").await;
        assert_eq!(after.status, StatusCode::OK, "{}", after.body);
        assert!(
            notice(&after.body).contains("is not a page position"),
            "{}",
            after.body
        );
        assert_eq!(after.body.matches("href=\"/case?line=").count(), 10);
        assert!(after.body.contains("showing 1–10"), "{}", after.body);

        let export = vic.get("/lines/export.csv?city=a%00").await;
        assert_eq!(export.status, StatusCode::BAD_REQUEST, "{}", export.body);
        assert!(export.body.contains("is not a city"));

        let case = vic.get("/case?line=account%3A07552660505%00").await;
        assert_eq!(case.status, StatusCode::NOT_FOUND, "{}", case.body);

        let install = vic.get("/probes?install=GZ-YX-000606%00").await;
        assert_eq!(install.status, StatusCode::BAD_REQUEST, "{}", install.body);
        assert!(install.body.contains("is not an installation ID"));

        let probes = vic.get("/probes?after=1.account%3A%00").await;
        assert_eq!(probes.status, StatusCode::OK, "{}", probes.body);
        assert!(
            notice(&probes.body).contains("is not a page position"),
            "{}",
            probes.body
        );
        assert!(probes.body.contains("GZ-YX-000606"));
        store.close().await;
    })
    .await;
}

/// A query value that does not fit its parameter (a word for a number, a
/// number past its type, a parameter given twice) is answered with the back
/// office's own error page, a 400 in the usual frame and headers, naming
/// the parameter and what it should be; axum's plain-text rejection was
/// answered before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::too_many_lines,
    reason = "one table of cases and what each page must hold"
)]
async fn a_query_value_that_does_not_fit_gets_the_error_page_naming_it() {
    let db = backoffice_support::TestDb::sqlite();
    let store = Store::open(&db.url).await.unwrap();
    add_user(&store, "ann", "admin").await;
    let app = app(&store, BackofficeConfig::default(), &Clock::new());
    // Not signed in, the sign-in comes first, whatever the query.
    let mut anonymous = Browser::new(&app);
    let page = anonymous.get("/audit?before=x").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(page.location().starts_with("/login"));

    let mut ann = Browser::new(&app);
    ann.sign_in("ann", PASSWORD).await;
    let cases = [
        (
            "/audit?before=x",
            "\u{201c}before\u{201d} is &quot;x&quot;",
            "audit entry (a whole number)",
        ),
        (
            "/audit?before=",
            "\u{201c}before\u{201d} is empty",
            "whole number",
        ),
        (
            "/quarantine?before=1.5",
            "\u{201c}before\u{201d} is &quot;1.5&quot;",
            "quarantine entry",
        ),
        (
            "/lines?n=ten",
            "\u{201c}n\u{201d} is &quot;ten&quot;",
            "0 or more",
        ),
        (
            "/lines?verdict=compliant&n=-1",
            "\u{201c}n\u{201d} is &quot;-1&quot;",
            "0 or more",
        ),
        (
            "/lines?n=99999999999999999999999",
            "\u{201c}n\u{201d} is &quot;99999999999999999999999&quot;",
            "whole number",
        ),
        (
            "/lines/export.csv?n=x",
            "\u{201c}n\u{201d} is &quot;x&quot;",
            "whole number",
        ),
        (
            "/config?published=latest",
            "\u{201c}published\u{201d}",
            "serial",
        ),
        (
            "/audit?action=login&action=logout",
            "\u{201c}action\u{201d} is given more than once",
            "filter\u{2019}s list",
        ),
        (
            "/case?line=a&line=b",
            "\u{201c}line\u{201d} is given more than once",
            "reference",
        ),
    ];
    for (path, names, should_be) in cases {
        let page = ann.get(path).await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            page.body
        );
        assert_eq!(
            page.headers[header::CONTENT_TYPE],
            "text/html; charset=utf-8",
            "{path}"
        );
        assert_eq!(page.headers[header::CACHE_CONTROL], "no-store", "{path}");
        assert!(
            page.headers[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("default-src 'none'"),
            "{path}"
        );
        assert!(
            page.body.contains("Wrong page address"),
            "{path}: {}",
            page.body
        );
        assert!(page.body.contains(names), "{path}: {}", page.body);
        assert!(page.body.contains(should_be), "{path}: {}", page.body);
        // The usual frame, with the signed-in user's navigation.
        assert!(page.body.contains("href=\"/lines\""), "{path}");
        assert!(page.body.contains("Sign out"), "{path}");
        assert!(!page.body.contains("Failed to deserialize"), "{path}");
    }
    // A refused export is not an export.
    assert!(
        store
            .audit_page(None, Some("export_csv"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Values that fit are read as before.
    for path in ["/audit?before=5", "/lines?n=3", "/quarantine?before=7"] {
        assert_eq!(ann.get(path).await.status, StatusCode::OK, "{path}");
    }
    // The sign-in page has the frame without navigation.
    let mut other = Browser::from(&app, "192.0.2.40");
    let login = other.get("/login?next=/lines&next=/audit").await;
    assert_eq!(login.status, StatusCode::BAD_REQUEST, "{}", login.body);
    assert!(
        login
            .body
            .contains("\u{201c}next\u{201d} is given more than once")
    );
    assert!(!login.body.contains("Sign out"));
    store.close().await;
}

/// A line with hundreds of observations (a dynamic egress address, or a
/// probe varying its path on purpose under an account it names): the case
/// view reads and shows the newest, and still the current verdict's
/// evidence, however many there are; it read every one with its evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_case_view_of_a_line_with_many_observations_is_bounded() {
    on_each_backend("case_view_bounded", |url| async move {
        let store = Store::open(&url).await.unwrap();
        seed_demo(&store).await;
        add_user(&store, "vic", "viewer").await;
        let key = "account:07552660505";
        let line = store.line(key).await.unwrap().unwrap();
        // 300 more observations of the line, each with a verdict decided
        // after the current one (higher ids) about an older observation,
        // and each observation seen after the current one.
        let mut statements = Vec::new();
        for i in 1..=300_i64 {
            let (obs, verdict) = (1_000_000 + i, 2_000_000 + i);
            let seen = line.last_seen_ms + i;
            let observed = line.last_seen_ms - 1_000 - i;
            statements.push(format!(
                "INSERT INTO observations (id, obs_key, line_key, install_id, account, \
                 declared_province, declared_city, declared_carrier, egress_ip, first_hop_ip, \
                 path, engine, agent_version, os, count, first_seen, last_seen, first_report_id, \
                 last_report_id, latest_verdict_id, latest_verdict_key) VALUES ({obs}, \
                 'bulk-obs-{i}', '{key}', 'bulk', '07552660505', 'CN-GD', '4403', \
                 'china_mobile', '203.0.113.{}', NULL, '[]', 'trippy-core', '0.1.0', 'windows', \
                 1, {seen}, {seen}, 'bulk-report-{i}', 'bulk-report-{i}', {verdict}, \
                 'bulk-verdict-{i}')",
                i % 250
            ));
            statements.push(format!(
                "INSERT INTO verdicts (id, line_key, observation_id, report_id, verdict, \
                 verdict_key, reasons, evidence, actual_carrier, actual_province, actual_city, \
                 egress_carrier, first_hop_carrier, filled, data_versions, observed_at, \
                 decided_at) VALUES ({verdict}, '{key}', {obs}, 'bulk-report-{i}', 'compliant', \
                 'bulk-verdict-{i}', '[]', '{{}}', 'china_mobile', 'CN-GD', '4403', \
                 'china_mobile', 'china_mobile', '[]', '{{}}', {observed}, {observed})"
            ));
        }
        execute_all(&url, &statements).await;
        let app = app(&store, BackofficeConfig::default(), &Clock::new());
        let mut vic = Browser::new(&app);
        vic.sign_in("vic", PASSWORD).await;
        let case = vic
            .get_old_case_link("/case?line=account%3A07552660505")
            .await;
        assert_eq!(case.status, StatusCode::OK);
        // At most 200 of the 300 verdicts and of the 300 observations.
        let verdicts = case.body.matches(">bulk-report-").count();
        let observations = case.body.matches(">203.0.113.").count();
        assert!(
            verdicts <= 200 && observations <= 200,
            "{verdicts} {observations}"
        );
        assert!(
            case.body.contains("Only the newest 200"),
            "no note of the cut"
        );
        // The current verdict and observation are still the ones shown.
        for want in ["carrier_mismatch", "113.116.32.1", ">current<"] {
            assert!(case.body.contains(want), "case view lacks {want}");
        }
        assert_eq!(case.body.matches(">current<").count(), 2, "one each");
        store.close().await;
    })
    .await;
}

/// The `href`s of a page, as a browser reads them.
fn hrefs(body: &str) -> Vec<String> {
    body.split("href=\"")
        .skip(1)
        .map(|a| a[..a.find('"').unwrap()].replace("&amp;", "&"))
        .collect()
}

/// Page links name a line by a reference, never by its key, which holds
/// the subscriber's account: URLs are kept in access logs and browser
/// histories. A reference opens its line in any back office on the same
/// database; one altered or made up opens none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_name_lines_without_their_accounts() {
    on_each_backend("links_name_lines", |url| async move {
        let store = Store::open(&url).await.unwrap();
        seed_demo(&store).await;
        add_user(&store, "vic", "viewer").await;
        let config = BackofficeConfig {
            page_size: 3,
            ..BackofficeConfig::default()
        };
        let app1 = app(&store, config.clone(), &Clock::new());
        let mut vic = Browser::new(&app1);
        vic.sign_in("vic", PASSWORD).await;
        let list = vic.get("/lines").await;
        assert_eq!(list.status, StatusCode::OK);
        let links = hrefs(&list.body);
        let cases: Vec<&String> = links.iter().filter(|h| h.starts_with("/case?")).collect();
        assert_eq!(cases.len(), 3, "{links:?}");
        for link in &links {
            assert!(
                !link.contains("account:")
                    && !link.contains("account%3A")
                    && !link.contains("install%3A")
                    // The demo accounts' digits; not "0755" alone, which a
                    // keyset cursor's millisecond timestamp may hold.
                    && !link.contains("0755266"),
                "a link names a line by its key: {link}"
            );
        }
        let case = vic.get(cases[0]).await;
        assert_eq!(case.status, StatusCode::OK, "{}", cases[0]);
        assert!(
            case.body.contains("account:0"),
            "the page itself shows the line"
        );
        let mut altered = cases[0].clone();
        let final_char = altered.pop().unwrap();
        altered.push(if final_char == 'A' { 'B' } else { 'A' });
        assert_eq!(vic.get(&altered).await.status, StatusCode::NOT_FOUND);
        assert_eq!(
            vic.get("/case?line=rAAAA").await.status,
            StatusCode::NOT_FOUND
        );
        // A link from before references, naming the key, is sent on to
        // the line's reference, and the account leaves the address bar.
        for old_link in [
            "/case?line=account:07552660505",
            "/case?line=account%3A07552660505",
        ] {
            let old = vic.get(old_link).await;
            assert_eq!(old.status, StatusCode::SEE_OTHER, "{old_link}");
            let to = old.location().to_owned();
            assert!(
                to.starts_with("/case?line=r") && !to.contains("0755"),
                "{old_link} -> {to}"
            );
            let case = vic.get(&to).await;
            assert_eq!(case.status, StatusCode::OK, "{to}");
            assert!(case.body.contains("account:07552660505"), "{to}");
        }

        // The next page's position is a reference too, and leads on.
        let next = links
            .iter()
            .find(|h| h.starts_with("/lines?") && h.contains("after="))
            .expect("a next page");
        let second = vic.get(next).await;
        assert_eq!(second.status, StatusCode::OK, "{next}");
        assert!(!second.body.contains("is not a page position"), "{next}");
        let later: Vec<String> = hrefs(&second.body)
            .into_iter()
            .filter(|h| h.starts_with("/case?"))
            .collect();
        assert_eq!(later.len(), 3);
        assert!(later.iter().all(|h| !cases.contains(&h)), "{later:?}");

        let probes = vic.get("/probes").await;
        assert!(
            hrefs(&probes.body)
                .iter()
                .all(|h| !h.contains("account%3A") && !h.contains("0755")),
            "{}",
            probes.body
        );
        assert!(probes.body.contains("href=\"/case?line=r"));

        // Another back office on the database names lines alike.
        let app2 = app(&store, config, &Clock::new());
        let mut ann = Browser::new(&app2);
        ann.sign_in("vic", PASSWORD).await;
        assert_eq!(hrefs(&ann.get("/lines").await.body), links);
        store.close().await;
    })
    .await;
}
