//! The compliance back office: server-rendered pages over the internal
//! database for the compliance team, behind a sign-in.
//!
//! - Accounts live in the database with argon2id hashes (`lineprobe-sync
//!   user add|passwd|disable`); roles are `viewer` (read) and `admin`
//!   (also the probe configuration, users and the audit log).
//! - Sessions are random tokens in `HttpOnly`, `SameSite=Strict`, `Secure`
//!   cookies; the database keeps only their SHA-256. Every form carries the
//!   session's anti-forgery token and every POST is checked against it.
//! - Sign-ins are throttled per user name (in lower case; per account for
//!   each of two accounts differing only by case, which an older database
//!   may hold) and per address with an exponential backoff, each check
//!   counted before it runs so that guesses sent at once are throttled
//!   too; only a few password checks (argon2id) run at once. An error
//!   never says whether the name exists.
//! - Sign-ins (also failed), configuration changes and exports go to the
//!   audit log.
//! - Pages: the dashboard, the lines with filters and CSV export, a line's
//!   case view (printable evidence), quarantine, probes, and for admins the
//!   probe configuration (signed manifest publishing), users and the audit
//!   log. No JavaScript; charts are inline SVG.
//!
//! [`router`] builds the whole application as an axum [`Router`];
//! [`serve`] puts it on HTTPS (or plain HTTP behind a proxy) with the
//! collector's hardened accept loop.

mod accounts;
mod admin;
mod auth;
mod case;
mod charts;
mod dashboard;
mod layout;
mod lineref;
mod lines;
mod manifest;
mod monitor;
mod query;
mod traffic;
mod workbook;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware;
use axum::routing::{get, post};
use lineprobe_shared::{Catalog, Classifier, ManifestSigningKey};
use tokio_util::sync::CancellationToken;

use crate::{BackofficeConfig, CollectorEndpoint, Error, Store, SyncConfig};

pub use crate::store::backoffice::{
    AuditEntry, AuditRow, BreakdownRow, LineCursor, LineLead, ManifestRow, NewSession, ProbeRow,
    PublicationRow, SessionUser, ThrottleState, TrendRow, UserRow,
};
pub use accounts::{Role, UserCommand, check_password, hash_password, run_user_command};
pub use auth::{ThrottlePolicy, throttle_after_failure};
pub use manifest::{ManifestForm, PublishOutcome, load_manifest_key};

/// Everything the pages need; cheap to clone.
#[derive(Clone)]
pub struct BackofficeState {
    inner: Arc<Inner>,
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    /// The slots every password check and hash of the pages runs in.
    passwords: Arc<auth::PasswordSlots>,
}

struct Inner {
    store: Store,
    config: BackofficeConfig,
    catalog: Arc<Catalog>,
    classifier: Classifier,
    collectors: Vec<CollectorEndpoint>,
    signing_key: Option<ManifestSigningKey>,
    /// Cookies carry `Secure` (and the `__Host-` prefix).
    secure_cookies: bool,
    /// A hash of a random password, verified when the name given at
    /// sign-in does not exist, so that the answer takes as long.
    dummy_hash: String,
    dashboard: dashboard::Cache,
    /// The collectors' traffic views, kept briefly for every viewer.
    traffic: traffic::Cache,
    /// How page links name lines (see `lineref`), once its key is read.
    line_refs: tokio::sync::OnceCell<lineref::LineRefs>,
}

impl std::fmt::Debug for BackofficeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackofficeState")
            .field("store", &self.inner.store.describe())
            .field("listen", &self.inner.config.listen)
            .field("secure_cookies", &self.inner.secure_cookies)
            .field(
                "manifest_key",
                &self
                    .inner
                    .signing_key
                    .as_ref()
                    .map(ManifestSigningKey::key_id),
            )
            .finish_non_exhaustive()
    }
}

impl BackofficeState {
    /// The state for `config` over `store`: reads the catalogs, the
    /// classifier's settings and the manifest signing key.
    pub fn new(config: &SyncConfig, store: Store) -> Result<Self, Error> {
        let signing_key = match &config.backoffice.manifest_key {
            Some(path) => Some(load_manifest_key(&config.resolve_path(path))?),
            None => None,
        };
        Ok(Self::with_parts(
            config.backoffice.clone(),
            store,
            config.catalog()?,
            config.classifier()?,
            config.collectors.clone(),
            signing_key,
        ))
    }

    /// The state from its parts (tests, and [`BackofficeState::new`]).
    pub fn with_parts(
        config: BackofficeConfig,
        store: Store,
        catalog: Arc<Catalog>,
        classifier: Classifier,
        collectors: Vec<CollectorEndpoint>,
        signing_key: Option<ManifestSigningKey>,
    ) -> Self {
        let secure_cookies = !config.allow_plain_http;
        let dummy_hash = auth::dummy_hash();
        Self {
            inner: Arc::new(Inner {
                store,
                config,
                catalog,
                classifier,
                collectors,
                signing_key,
                secure_cookies,
                dummy_hash,
                dashboard: dashboard::Cache::default(),
                traffic: traffic::Cache::default(),
                line_refs: tokio::sync::OnceCell::new(),
            }),
            clock: Arc::new(|| chrono::Utc::now().timestamp_millis()),
            passwords: Arc::new(auth::PasswordSlots::for_this_machine()),
        }
    }

    /// The same state reading the time (Unix ms) from `clock`: for tests
    /// of expiry and backoff.
    #[must_use]
    pub fn with_clock(self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        Self {
            clock: Arc::new(clock),
            ..self
        }
    }

    /// The same state running at most `slots` password checks and hashes
    /// at once (argon2id, ~19 MiB each), a sign-in waiting up to `wait` for
    /// a slot before it is answered 503. The default: one slot per core
    /// (2 to 16), 5 s. With `slots` 0 (tests) every sign-in is turned away
    /// and a new password's hash waits for ever.
    #[must_use]
    pub fn with_password_checks(self, slots: usize, wait: Duration) -> Self {
        Self {
            passwords: Arc::new(auth::PasswordSlots::new(slots, wait)),
            ..self
        }
    }

    /// How page links name lines: the key is read from the database (made
    /// on first use) when a page first needs it.
    pub(super) async fn line_refs(&self) -> Result<&lineref::LineRefs, Error> {
        self.inner
            .line_refs
            .get_or_try_init(|| async {
                let mut fresh = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fresh);
                let secret = self
                    .inner
                    .store
                    .backoffice_secret(lineref::SECRET_NAME, &fresh)
                    .await?;
                lineref::LineRefs::new(&secret).ok_or_else(|| {
                    Error::Internal(format!(
                        "the stored {name} secret is {} bytes long, not 32: delete the row \
                         named {name} from the table backoffice_secrets and a new secret is \
                         made (links to lines made before stop working)",
                        secret.len(),
                        name = lineref::SECRET_NAME,
                    ))
                })
            })
            .await
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    fn config(&self) -> &BackofficeConfig {
        &self.inner.config
    }

    fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    /// Writes an audit entry; a failure is logged, never shown (the action
    /// it records has happened).
    async fn audit(&self, actor: &str, action: &str, ip: &str, detail: serde_json::Value) {
        let entry = AuditEntry {
            at_ms: self.now_ms(),
            actor,
            action,
            source_ip: ip,
            detail: &detail,
        };
        if let Err(e) = self.inner.store.audit(&entry).await {
            tracing::error!(error = %e, action, actor, "audit log entry not written");
        }
    }

    /// The client's address: the connection's peer, or behind a trusted
    /// proxy the last address its `X-Forwarded-For` names.
    fn client_ip(
        &self,
        conn: Option<&lineprobe_collector::ConnInfo>,
        headers: &HeaderMap,
    ) -> String {
        let Some(conn) = conn else {
            return "unknown".to_owned();
        };
        let peer = conn.client().ip();
        let config = self.config();
        if config.behind_proxy && conn.is_trusted_proxy(&config.trusted_proxies) {
            let forwarded = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .collect::<Vec<_>>();
            // The rightmost address no trusted proxy holds is the one the
            // first trusted proxy saw; anything left of it the client wrote.
            // An entry that is no address (`unknown`, a typo) ends the walk:
            // skipping it would believe what the client wrote before it.
            let mut client = None;
            for entry in forwarded.iter().rev() {
                let Some(ip) = forwarded_address(entry) else {
                    break;
                };
                client = Some(ip);
                if !config.trusted_proxies.iter().any(|n| n.contains(&ip)) {
                    break;
                }
            }
            if let Some(ip) = client {
                return ip.to_string();
            }
        }
        peer.to_string()
    }
}

/// The address of one `X-Forwarded-For` entry: an address, or one with a
/// port as some proxies write it (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse::<IpAddr>().ok())
        })
        .map(|ip| ip.to_canonical())
}

/// The whole back office as a router. Every route but the sign-in page and
/// the stylesheet requires a session; the admin pages require the admin
/// role; every POST requires the session's anti-forgery token.
pub fn router(state: BackofficeState) -> Router {
    let admin = Router::new()
        .route("/config", get(manifest::page))
        .route("/config/publish", post(manifest::publish))
        .route("/config/republish", post(manifest::republish))
        .route("/users", get(admin::users_page).post(admin::add_user))
        .route("/users/change", post(admin::change_user))
        .route("/audit", get(admin::audit_page))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ));
    let signed_in = Router::new()
        .route("/", get(dashboard::page))
        .route("/lines", get(lines::page))
        .route("/lines/export.csv", get(lines::export_csv))
        .route("/lines/export.xlsx", get(workbook::export_xlsx))
        .route("/case", get(case::page))
        .route("/quarantine", get(monitor::quarantine_page))
        .route("/probes", get(monitor::probes_page))
        .route("/traffic", get(traffic::page))
        .route("/account", get(admin::account_page))
        .route("/account/password", post(admin::change_own_password))
        .route("/logout", post(auth::logout))
        .merge(admin)
        .fallback(layout::not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_session,
        ));
    Router::new()
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/assets/app.css", get(layout::stylesheet))
        .merge(signed_in)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            layout::security_headers,
        ))
        .with_state(state)
}

/// Serves the back office until `shutdown` fires: HTTPS with the
/// configured certificate (or a generated self-signed one), or plain HTTP
/// when `behind_proxy` or `allow_plain_http` says so.
pub async fn serve(
    config: &SyncConfig,
    store: Store,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let state = BackofficeState::new(config, store)?;
    let listener = lineprobe_collector::bind(config.backoffice.listen)
        .await
        .map_err(|e| Error::Backoffice(format!("{e}; is another program using the port?")))?;
    serve_on(config, state, listener, shutdown).await
}

/// Like [`serve`], on a listener already bound (tests bind port 0).
pub async fn serve_on(
    config: &SyncConfig,
    state: BackofficeState,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let bo = &config.backoffice;
    let tls = if bo.behind_proxy || bo.allow_plain_http {
        None
    } else {
        let certs = match (&bo.tls_cert, &bo.tls_key) {
            (Some(cert), Some(key)) => lineprobe_collector::CertStore::from_pem_files(
                &config.resolve_path(cert),
                &config.resolve_path(key),
            ),
            _ => lineprobe_collector::CertStore::load_or_generate(
                &lineprobe_collector::TlsConfig {
                    cert: None,
                    key: None,
                    self_signed_names: bo.self_signed_names.clone(),
                    reload_check_secs: 60,
                },
                &config.resolve_path(&config.data_dir).join("backoffice"),
            ),
        }
        .map_err(|e| Error::Backoffice(format!("cannot load the HTTPS certificate: {e}")))?;
        if certs.is_generated() {
            tracing::warn!(
                cert = %certs.cert_path().display(),
                "the back office serves a generated self-signed certificate; configure \
                 backoffice.tls_cert and tls_key for one the browsers trust"
            );
        }
        drop(certs.spawn_reloader(Duration::from_mins(1), shutdown.clone()));
        Some(
            certs
                .server_config(None)
                .map_err(|e| Error::Backoffice(format!("cannot set up HTTPS: {e}")))?,
        )
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let local = listener.local_addr().map_or(bo.listen, |a| a);
    if state.store().users().await?.is_empty() {
        tracing::warn!(
            "no back-office user exists yet: create one with `lineprobe-sync user add NAME \
             --role admin`"
        );
    }
    tracing::info!(url = %format!("{scheme}://{local}/"), "back office listening");
    // Count the dashboard's figures now, so that the first visitor does not
    // wait for a pass over every line.
    let warm = state.clone();
    tokio::spawn(async move {
        if let Err(e) = warm.figures().await {
            tracing::warn!(error = %e, "dashboard figures not counted at start");
        }
    });
    let options = lineprobe_collector::ListenerOptions {
        max_connections: 256,
        // Staff often sit behind one office address or reverse proxy: no
        // share per prefix below the whole.
        max_connections_per_prefix: 256,
        header_read_timeout: Duration::from_secs(10),
        tls_handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_mins(2),
        max_header_bytes: 32 * 1024,
        trusted_proxies: Vec::new(),
        proxy_protocol: false,
        shutdown_grace: Duration::from_secs(10),
    };
    lineprobe_collector::serve(listener, tls, options, router(state), shutdown, None)
        .await
        .map_err(|e| Error::Backoffice(e.to_string()))
}

/// Whether `text` from a request can equal a stored value and be sent to
/// the database as one: PostgreSQL's text holds no NUL character and fails
/// the whole query given one (a 500 for a typo'd or hostile URL), where
/// SQLite only matches nothing. No stored key, code or name holds one, so
/// such a value is answered as matching nothing, before any query.
fn storable(text: &str) -> bool {
    !text.contains('\0')
}

/// A header value from text that is known to be valid.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `Content-Type` of the pages.
const HTML: &str = "text/html; charset=utf-8";

/// The lines-page filter value for "not declared" (`/lines?carrier=none`):
/// no province or carrier has this name or code.
const NOT_DECLARED: &str = "none";

/// A response header pair for the page type.
fn html_type() -> (header::HeaderName, HeaderValue) {
    (header::CONTENT_TYPE, HeaderValue::from_static(HTML))
}
