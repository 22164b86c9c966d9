//! Signing in and out, sessions, the anti-forgery check on every form, and
//! sign-in throttling.
//!
//! A session is a random 256-bit token in a cookie; the database keeps its
//! SHA-256, so neither a database copy nor a log of it signs anybody in.
//! Each session has its own anti-forgery token, put in every form and
//! compared (in constant time) on every POST. The sign-in form, used before
//! there is a session, carries a token that must match a short-lived
//! cookie of its own (double submit). Cookies are `HttpOnly`,
//! `SameSite=Strict`, `Path=/` and, unless plain HTTP was configured for
//! local testing, `Secure` with the `__Host-` prefix.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use axum::Form;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use maud::html;
use rand::RngCore as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::sync::Semaphore;

use super::accounts::{Role, verify_password};
use super::layout::{self, Notice};
use super::query::{PageQuery, QueryParams};
use super::{BackofficeState, NewSession, ThrottleState, header_value};
use crate::BackofficeConfig;
use crate::store::backoffice::ThrottleReservation;

/// Largest form body accepted.
const MAX_FORM_BYTES: usize = 256 * 1024;
/// A session's last use is written at most this often (ms), and more often
/// under a short idle limit.
const TOUCH_EVERY_MS: i64 = 60_000;
/// Lifetime of the sign-in form's cookie (s).
const LOGIN_COOKIE_TTL_S: u64 = 3600;
/// Longest user name accepted at sign-in.
const MAX_NAME_CHARS: usize = 64;

/// The signed-in user of a request, put in its extensions by
/// [`require_session`].
#[derive(Debug, Clone)]
pub(super) struct Viewer {
    /// The account name.
    pub(super) name: String,
    /// Its role.
    pub(super) role: Role,
    /// The session's anti-forgery token, for the forms of the page.
    pub(super) csrf: String,
    /// The session's token hash (to end it).
    pub(super) token_hash: String,
    /// The client's address.
    pub(super) ip: String,
}

impl Viewer {
    pub(super) fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// A fresh random token: 32 bytes, URL-safe base64.
pub(super) fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What the database keeps of a session token: its SHA-256, in hex.
pub(super) fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Compares two secrets in constant time.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A PHC hash of a random password, to verify against when the name given
/// does not exist (so that such an answer takes as long as a wrong
/// password's).
pub(super) fn dummy_hash() -> String {
    super::accounts::hash_password(&new_token()).unwrap_or_default()
}

fn session_cookie(state: &BackofficeState) -> &'static str {
    if state.inner.secure_cookies {
        "__Host-lp_session"
    } else {
        "lp_session"
    }
}

fn login_cookie(state: &BackofficeState) -> &'static str {
    if state.inner.secure_cookies {
        "__Host-lp_login"
    } else {
        "lp_login"
    }
}

/// A `Set-Cookie` value; `max_age_s` 0 deletes the cookie.
fn set_cookie(state: &BackofficeState, name: &str, value: &str, max_age_s: u64) -> HeaderValue {
    let mut cookie =
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}");
    if max_age_s > 0 {
        let expires = chrono::Utc::now()
            + chrono::Duration::seconds(i64::try_from(max_age_s).unwrap_or(i64::MAX / 1000));
        let _ = write!(
            cookie,
            "; Expires={}",
            expires.format("%a, %d %b %Y %H:%M:%S GMT")
        );
    }
    if state.inner.secure_cookies {
        cookie.push_str("; Secure");
    }
    header_value(&cookie)
}

/// The value of cookie `name`, if the request sent it (once).
fn read_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// Only a path on this site may follow sign-in.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && n.len() <= 2000
                && !n.chars().any(char::is_control) =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// The session's user, or a redirect to the sign-in page (GET) or a 401
/// (anything else). On a POST, also checks the anti-forgery token.
pub(super) async fn require_session(
    State(state): State<BackofficeState>,
    request: Request,
    next: Next,
) -> Response {
    let ip = state.client_ip(
        request.extensions().get::<lineprobe_collector::ConnInfo>(),
        request.headers(),
    );
    let viewer = match session_viewer(&state, request.headers(), ip).await {
        Ok(Some(viewer)) => viewer,
        Ok(None) => return unauthenticated(&request),
        Err(response) => return response,
    };
    let (mut parts, body) = request.into_parts();
    let body = if parts.method == Method::GET || parts.method == Method::HEAD {
        body
    } else {
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
            return layout::error_page(
                StatusCode::PAYLOAD_TOO_LARGE,
                Some(&viewer),
                "Form too large",
                "The form sent is larger than the back office accepts.",
            );
        };
        if !form_token_matches(&parts.headers, &bytes, &viewer.csrf) {
            tracing::warn!(user = %viewer.name, path = %parts.uri.path(), ip = %viewer.ip,
                "a form without a valid anti-forgery token was refused");
            return layout::error_page(
                StatusCode::FORBIDDEN,
                Some(&viewer),
                "Form refused",
                "The form did not carry this session's anti-forgery token: it is out of date \
                 or did not come from this site. Reload the page and send it again.",
            );
        }
        axum::body::Body::from(bytes)
    };
    parts.extensions.insert(viewer);
    next.run(Request::from_parts(parts, body)).await
}

/// Whether an URL-encoded form body carries `csrf` equal to `expected`.
fn form_token_matches(headers: &HeaderMap, body: &[u8], expected: &str) -> bool {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return false;
    }
    let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body) else {
        return false;
    };
    let mut tokens = pairs.iter().filter(|(k, _)| k == "csrf").map(|(_, v)| v);
    match (tokens.next(), tokens.next()) {
        (Some(token), None) => same_secret(token, expected),
        _ => false,
    }
}

/// The signed-in user of the request's session cookie: `Ok(None)` when
/// there is none or it ended.
async fn session_viewer(
    state: &BackofficeState,
    headers: &HeaderMap,
    ip: String,
) -> Result<Option<Viewer>, Response> {
    let Some(token) = read_cookie(headers, session_cookie(state)) else {
        return Ok(None);
    };
    let hash = token_hash(token);
    let store = state.store();
    let found = store
        .session_user(&hash)
        .await
        .map_err(|e| layout::internal_error(None, &e))?;
    let Some(session) = found else {
        return Ok(None);
    };
    let now = state.now_ms();
    let idle_ms = i64::try_from(state.config().session_idle_s).unwrap_or(i64::MAX / 1000) * 1000;
    let role = Role::parse(&session.role);
    if session.disabled
        || role.is_none()
        || session.expires_at_ms <= now
        || session.last_seen_at_ms.saturating_add(idle_ms) <= now
    {
        store
            .session_delete(&hash)
            .await
            .map_err(|e| layout::internal_error(None, &e))?;
        return Ok(None);
    }
    // Written at most once a minute, and at least four times per idle
    // limit: a use that is not written does not count against the limit,
    // so with a limit near the minute a session in use would end.
    if now - session.last_seen_at_ms >= TOUCH_EVERY_MS.min(idle_ms / 4) {
        store
            .session_touch(&hash, now)
            .await
            .map_err(|e| layout::internal_error(None, &e))?;
    }
    Ok(Some(Viewer {
        name: session.name,
        role: role.unwrap_or(Role::Viewer),
        csrf: session.csrf_token,
        token_hash: hash,
        ip,
    }))
}

fn unauthenticated(request: &Request) -> Response {
    if request.method() == Method::GET || request.method() == Method::HEAD {
        let target = request
            .uri()
            .path_and_query()
            .map_or("/", axum::http::uri::PathAndQuery::as_str);
        let location = if target == "/" {
            "/login".to_owned()
        } else {
            format!(
                "/login?{}",
                serde_urlencoded::to_string([("next", target)]).unwrap_or_default()
            )
        };
        Redirect::to(&location).into_response()
    } else {
        layout::error_page(
            StatusCode::UNAUTHORIZED,
            None,
            "Sign in first",
            "Your session has ended. Sign in again, then send the form again.",
        )
    }
}

/// Refuses the admin pages to anyone but admins (and records the attempt).
pub(super) async fn require_admin(
    State(state): State<BackofficeState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(viewer) = request.extensions().get::<Viewer>().cloned() else {
        return unauthenticated(&request);
    };
    if viewer.is_admin() {
        return next.run(request).await;
    }
    state
        .audit(
            &viewer.name,
            "access_denied",
            &viewer.ip,
            serde_json::json!({ "method": request.method().as_str(), "path": request.uri().path() }),
        )
        .await;
    layout::error_page(
        StatusCode::FORBIDDEN,
        Some(&viewer),
        "Admins only",
        "This page is for back-office admins. Ask an admin if you need it.",
    )
}

/// The query of the sign-in page.
#[derive(Debug, Deserialize)]
pub(super) struct LoginQuery {
    next: Option<String>,
}

impl QueryParams for LoginQuery {
    const PARAMS: &'static [(&'static str, &'static str)] = &[(
        "next",
        "the path of a back-office page to go to after signing in",
    )];
}

/// `GET /login`.
pub(super) async fn login_page(
    State(state): State<BackofficeState>,
    headers: HeaderMap,
    PageQuery(query): PageQuery<LoginQuery>,
) -> Response {
    let next = safe_next(query.next.as_deref());
    login_form(&state, &headers, &next, StatusCode::OK, None)
}

/// The sign-in form, with a fresh (or the current) form token cookie.
fn login_form(
    state: &BackofficeState,
    headers: &HeaderMap,
    next: &str,
    status: StatusCode,
    notice: Option<&Notice>,
) -> Response {
    let token = read_cookie(headers, login_cookie(state))
        .filter(|t| t.len() == 43)
        .map_or_else(new_token, str::to_owned);
    let body = html! {
        section.login {
            h1 { "LineProbe compliance back office" }
            p.muted { "线路合规核查 — sign in to continue." }
            @if let Some(notice) = notice { (notice) }
            form method="post" action="/login" {
                input type="hidden" name="csrf" value=(token);
                input type="hidden" name="next" value=(next);
                label { "User name" input type="text" name="name" autocomplete="username" required autofocus; }
                label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                button type="submit" { "Sign in" }
            }
        }
    };
    let mut response = layout::page_response(status, "Sign in", None, "", &body);
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, login_cookie(state), &token, LOGIN_COOKIE_TTL_S),
    );
    response
}

/// The sign-in form as sent.
#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

/// `POST /login`.
pub(super) async fn login(
    State(state): State<BackofficeState>,
    headers: HeaderMap,
    conn: Option<axum::Extension<lineprobe_collector::ConnInfo>>,
    Form(form): Form<LoginForm>,
) -> Response {
    let ip = state.client_ip(conn.as_ref().map(|c| &c.0), &headers);
    let next = safe_next(form.next.as_deref());
    let cookie_ok = read_cookie(&headers, login_cookie(&state))
        .is_some_and(|c| !form.csrf.is_empty() && same_secret(c, &form.csrf));
    if !cookie_ok {
        tracing::warn!(%ip, "a sign-in form without a valid anti-forgery token was refused");
        return login_form(
            &state,
            &headers,
            &next,
            StatusCode::FORBIDDEN,
            Some(&Notice::error(
                "The sign-in form was out of date or did not come from this site. Try again.",
            )),
        );
    }
    // A NUL cannot be stored in PostgreSQL's text (the throttle, the audit
    // log and the account lookup all failed, a 500 anyone could raise
    // before signing in); no account name holds one, so as U+FFFD it is an
    // ordinary unknown name.
    let name: String = form
        .name
        .trim()
        .chars()
        .take(MAX_NAME_CHARS)
        .map(|c| {
            if c == '\0' {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect();
    let keys = match throttle_keys(state.store(), &name, &ip).await {
        Ok(keys) => keys,
        Err(e) => return layout::internal_error(None, &e),
    };
    let outcome = match attempt(&state, &name, form.password, &keys).await {
        Ok(outcome) => outcome,
        Err(e) => return layout::internal_error(None, &e),
    };
    match outcome {
        Attempt::Throttled { wait_s } => {
            let notice = Notice::error(&format!(
                "Too many failed sign-ins for this name or from this address. Wait {wait_s} \
                 seconds, then try again."
            ));
            let status = StatusCode::TOO_MANY_REQUESTS;
            let form = login_form(&state, &headers, &next, status, Some(&notice));
            let why = ("login_failed", "throttled");
            turned_away(&state, &name, &ip, why, wait_s, form).await
        }
        Attempt::Busy => {
            let notice = Notice::error(&format!(
                "The back office is busy checking other sign-ins. Wait {BUSY_RETRY_AFTER_S} \
                 seconds, then try again."
            ));
            let status = StatusCode::SERVICE_UNAVAILABLE;
            let form = login_form(&state, &headers, &next, status, Some(&notice));
            let why = ("login_failed", "busy");
            turned_away(&state, &name, &ip, why, BUSY_RETRY_AFTER_S, form).await
        }
        Attempt::Failed { reason, failures } => {
            let detail = serde_json::json!({ "reason": reason, "failures": failures });
            let notice = "Sign-in failed: the name or the password is wrong, or the account is \
                          disabled.";
            sign_in_failed(&state, &headers, &next, (&name, &ip), detail, notice).await
        }
        Attempt::Passed(user) => match start_session(&state, &user, &headers, &ip).await {
            // The password changed (or the account was disabled) while the
            // old one was being checked.
            Ok(None) => {
                let detail = serde_json::json!({ "reason": "account_changed" });
                let notice = "Sign-in failed: the account changed while signing in; sign in again.";
                sign_in_failed(&state, &headers, &next, (&name, &ip), detail, notice).await
            }
            Ok(Some(token)) => {
                let mut response = Redirect::to(&next).into_response();
                let headers = response.headers_mut();
                let ttl_s = state.config().session_ttl_s;
                headers.append(
                    header::SET_COOKIE,
                    set_cookie(&state, session_cookie(&state), &token, ttl_s),
                );
                headers.append(
                    header::SET_COOKIE,
                    set_cookie(&state, login_cookie(&state), "", 0),
                );
                response
            }
            Err(e) => layout::internal_error(None, &e),
        },
    }
}

/// A refused sign-in of `who` (name, address): audited with `detail`, and
/// the form again with `notice`.
async fn sign_in_failed(
    state: &BackofficeState,
    headers: &HeaderMap,
    next: &str,
    (name, ip): (&str, &str),
    detail: serde_json::Value,
    notice: &str,
) -> Response {
    state.audit(name, "login_failed", ip, detail).await;
    login_form(
        state,
        headers,
        next,
        StatusCode::UNAUTHORIZED,
        Some(&Notice::error(notice)),
    )
}

/// A password check turned away unchecked: audited as `action` (the
/// `reason` and the wait in its detail), and `response` told to come back
/// in `wait_s` seconds (`Retry-After`).
pub(super) async fn turned_away(
    state: &BackofficeState,
    actor: &str,
    ip: &str,
    (action, reason): (&str, &str),
    wait_s: i64,
    mut response: Response,
) -> Response {
    state
        .audit(
            actor,
            action,
            ip,
            serde_json::json!({ "reason": reason, "retry_after_s": wait_s }),
        )
        .await;
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header_value(&wait_s.to_string()));
    response
}

/// The throttle keys of a password check: the name's and the client's
/// address. Sign-in and the password change count failures against the
/// same keys, so neither form is a way around the other's backoff.
///
/// The name's key is the name in lower case (`user:ann`): names that differ
/// only by letter case share it, so guessing by case variants of a name
/// (none of which is an account, or the one account the name stands for)
/// meets one backoff. New names are refused when another differs only by
/// case, but an older database may hold such a pair (`ann` and `Ann`): a
/// name that is exactly one of them gets that account's own key
/// (`account:ID`), so that one's failures do not lock the other out and
/// one's right password does not clear the failures guessed against the
/// other; a case variant that is neither keeps the shared lower-case key.
pub(super) async fn throttle_keys(
    store: &crate::Store,
    name: &str,
    ip: &str,
) -> Result<[String; 2], crate::Error> {
    let alike = store.users_named_alike(name).await?;
    let name_key = match alike.iter().find(|(_, n)| n == name) {
        Some((id, _)) if alike.len() > 1 => format!("account:{id}"),
        _ => format!("user:{}", name.to_lowercase()),
    };
    Ok([name_key, address_key(ip)])
}

/// The address throttle key of a client: its IPv4 address, or its IPv6 /64.
/// An IPv6 host takes any interface id in its /64 at will (privacy
/// addresses change by themselves), so keyed by whole address it could try
/// every name from a fresh one and never meet the per-address backoff.
fn address_key(ip: &str) -> String {
    match ip.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(IpAddr::V6(v6)) => {
            let network = Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64));
            format!("addr:{network}/64")
        }
        _ => format!("addr:{ip}"),
    }
}

/// How a password check ended.
pub(super) enum Attempt {
    /// A key is locked for this long; the password was not checked.
    Throttled { wait_s: i64 },
    /// Every password slot stayed taken for the whole wait; the password
    /// was not checked and nothing was counted. Answered 503 with
    /// `Retry-After` [`BUSY_RETRY_AFTER_S`].
    Busy,
    /// Refused (why, for the audit log only; and the failures counted).
    Failed { reason: &'static str, failures: i64 },
    /// The name and password are right and the account may sign in.
    Passed(Box<super::UserRow>),
}

/// Checks the password of `name` (against a dummy hash when the name does
/// not exist) under the throttle of `keys` (the name's first, as
/// [`throttle_keys`] gives them).
///
/// The check is counted as a failure against every key before it runs, in
/// the same transaction that finds the keys unlocked
/// ([`crate::Store::throttle_reserve`]): guesses sent at once each see the
/// ones before, so past the free failures they are answered `Throttled`
/// unchecked, and each check that ran is one failure. A right password
/// then clears the name's failures and gives back the one it took from
/// the address (a colleague's sign-ins from the office's address are no
/// failures; an attacker signing in to an account of their own does not
/// clear the address's). A check that never ran (no password slot in
/// time) gives back every failure it took. A check abandoned midway (the
/// client hung up, the database failed) stays counted: hanging up must not
/// be a free guess.
pub(super) async fn attempt(
    state: &BackofficeState,
    name: &str,
    password: String,
    keys: &[String; 2],
) -> Result<Attempt, crate::Error> {
    let store = state.store();
    let now = state.now_ms();
    let policy = ThrottlePolicy::from_config(state.config());
    let reserved = match store
        .throttle_reserve(keys, now, |current| {
            throttle_after_failure(Some(current), now, &policy)
        })
        .await?
    {
        ThrottleReservation::Locked { until_ms } => {
            return Ok(Attempt::Throttled {
                wait_s: (until_ms - now + 999) / 1000,
            });
        }
        ThrottleReservation::Reserved(reserved) => reserved,
    };
    let user = store.user_by_name(name).await?;
    let hash = user.as_ref().map_or_else(
        || state.inner.dummy_hash.clone(),
        |u| u.password_hash.clone(),
    );
    let check = move || verify_password(&password, &hash);
    let Ok(verified) = state.passwords.run(Some(state.passwords.wait), check).await else {
        for failure in &reserved {
            store.throttle_release(failure).await?;
        }
        return Ok(Attempt::Busy);
    };
    // A check whose thread failed is a wrong password.
    let verified = verified.unwrap_or(false);
    let failure = match &user {
        None => Some("unknown_user"),
        Some(u) if u.disabled => Some("disabled"),
        Some(_) if !verified => Some("bad_password"),
        Some(u) if Role::parse(&u.role).is_none() => Some("bad_role"),
        Some(_) => None,
    };
    match (failure, user) {
        (None, Some(user)) => {
            store.throttle_clear(&keys[0]).await?;
            for failure in reserved.iter().filter(|f| f.key != keys[0]) {
                store.throttle_release(failure).await?;
            }
            Ok(Attempt::Passed(Box::new(user)))
        }
        (reason, _) => Ok(Attempt::Failed {
            reason: reason.unwrap_or("unknown_user"),
            failures: reserved.iter().map(|f| f.after.failures).max().unwrap_or(0),
        }),
    }
}

/// How long a password check waits for a slot before it is turned away.
const PASSWORD_SLOT_WAIT: Duration = Duration::from_secs(5);
/// The `Retry-After` (s) of a check turned away for want of a slot.
pub(super) const BUSY_RETRY_AFTER_S: i64 = 5;

/// No password slot freed up in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Busy;

/// The slots of password work (argon2id: ~19 MiB and tens of ms of one
/// core per check or hash). Without them every request would get its own
/// blocking thread, and a few hundred sign-ins sent at once (under as many
/// names and addresses, so no throttle key stops them) would take GBs of
/// memory and every core, the throttle's own bookkeeping included.
///
/// With every slot taken a sign-in queues (fairly, first come first
/// served) for up to [`PASSWORD_SLOT_WAIT`]: a morning's burst of
/// colleagues signing in waits a moment rather than being refused, while a
/// flood cannot pile up work without bound. Past the wait the answer is
/// 503 with `Retry-After` and the attempt is not counted (nothing was
/// checked). Hashing a new password (a signed-in user or an admin, rarely)
/// queues as long as it takes.
#[derive(Debug)]
pub(super) struct PasswordSlots {
    slots: Arc<Semaphore>,
    /// How long a sign-in waits for a slot.
    pub(super) wait: Duration,
}

impl PasswordSlots {
    /// `slots` at once, waiting `wait` for one.
    pub(super) fn new(slots: usize, wait: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots)),
            wait,
        }
    }

    /// As many slots as cores (argon2id here uses one core per check, so
    /// more would only slow each down), at least 2 and at most 16 (~300 MiB
    /// at most), waiting [`PASSWORD_SLOT_WAIT`].
    pub(super) fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Self::new(cores.clamp(2, 16), PASSWORD_SLOT_WAIT)
    }

    /// Runs `work` on a blocking thread once a slot is free (waiting at
    /// most `wait`, or as long as it takes with `None`); the inner error is
    /// the thread's failure. The slot goes with the work, so that it stays
    /// taken until the work ends even when the request is dropped midway.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        wait: Option<Duration>,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<Result<T, tokio::task::JoinError>, Busy> {
        let slot = match wait {
            Some(wait) => tokio::time::timeout(wait, Arc::clone(&self.slots).acquire_owned())
                .await
                .map_err(|_| Busy)?,
            None => Arc::clone(&self.slots).acquire_owned().await,
        }
        // Never closed.
        .map_err(|_| Busy)?;
        Ok(tokio::task::spawn_blocking(move || {
            let done = work();
            drop(slot);
            done
        })
        .await)
    }
}

impl BackofficeState {
    /// Hashes a new password in a password slot, waiting for one as long as
    /// it takes (only signed-in users hash, and rarely).
    pub(super) async fn hash_new_password(&self, password: String) -> Result<String, crate::Error> {
        let hashed = self
            .passwords
            .run(None, move || super::accounts::hash_password(&password))
            .await
            .map_err(|Busy| crate::Error::Internal("no password slot came free".to_owned()))?;
        hashed.map_err(|e| {
            crate::Error::Internal(format!("the password hashing thread failed: {e}"))
        })?
    }
}

/// Stores a new session for `user` (a fresh token: a session is never
/// carried over from before sign-in) and returns its token; `None` when the
/// account changed (password, disabled) since its row was read.
async fn start_session(
    state: &BackofficeState,
    user: &super::UserRow,
    headers: &HeaderMap,
    ip: &str,
) -> Result<Option<String>, crate::Error> {
    let store = state.store();
    let now = state.now_ms();
    let token = new_token();
    let csrf = new_token();
    let hash = token_hash(&token);
    let ttl_ms = i64::try_from(state.config().session_ttl_s).unwrap_or(i64::MAX / 1000) * 1000;
    let user_agent: String = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    let made = store
        .session_insert(&NewSession {
            token_hash: &hash,
            user_id: user.id,
            csrf_token: &csrf,
            created_at_ms: now,
            expires_at_ms: now + ttl_ms,
            source_ip: ip,
            user_agent: &user_agent,
            password_hash: &user.password_hash,
        })
        .await?;
    if !made {
        return Ok(None);
    }
    // The session the browser carried until now (another account's, or an
    // older one of the same) ends here: it would otherwise stay valid on
    // the server, unseen, until it expired.
    if let Some(old) = read_cookie(headers, session_cookie(state))
        && let Err(e) = store.session_delete(&token_hash(old)).await
    {
        tracing::warn!(error = %e, "the session replaced at sign-in was not ended");
    }
    let idle_ms = i64::try_from(state.config().session_idle_s).unwrap_or(0) * 1000;
    if let Err(e) = store.sessions_purge(now, now - idle_ms).await {
        tracing::warn!(error = %e, "expired sessions not purged");
    }
    let window_ms = ThrottlePolicy::from_config(state.config()).window_ms;
    if let Err(e) = store.throttle_purge(now - window_ms, now).await {
        tracing::warn!(error = %e, "old sign-in failures not purged");
    }
    state
        .audit(
            &user.name,
            "login",
            ip,
            serde_json::json!({ "role": user.role, "user_agent": user_agent }),
        )
        .await;
    Ok(Some(token))
}

/// `POST /logout`.
pub(super) async fn logout(
    State(state): State<BackofficeState>,
    axum::Extension(viewer): axum::Extension<Viewer>,
) -> Response {
    if let Err(e) = state.store().session_delete(&viewer.token_hash).await {
        return layout::internal_error(Some(&viewer), &e);
    }
    state
        .audit(&viewer.name, "logout", &viewer.ip, serde_json::json!({}))
        .await;
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, session_cookie(&state), "", 0),
    );
    response
}

/// How failed sign-ins slow further ones down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures allowed before any wait.
    pub free_failures: u32,
    /// The first wait (ms); it doubles with each further failure.
    pub base_ms: i64,
    /// The longest wait (ms).
    pub max_ms: i64,
    /// Failures older than this (ms) are forgotten.
    pub window_ms: i64,
}

impl ThrottlePolicy {
    /// The policy of the `[backoffice]` configuration.
    pub fn from_config(config: &BackofficeConfig) -> Self {
        let ms = |s: u64| i64::try_from(s).unwrap_or(i64::MAX / 1000) * 1000;
        Self {
            free_failures: config.login_free_failures,
            base_ms: ms(config.login_backoff_s),
            max_ms: ms(config.login_backoff_max_s),
            window_ms: ms(config.login_failure_window_s),
        }
    }
}

/// The throttling state after one more failed sign-in at `now_ms`: the
/// failures count up (from zero again when the last one is older than the
/// window), and past the free ones each failure locks the key for
/// `base · 2^(n−1)` (capped), n counting the failures past the free ones.
pub fn throttle_after_failure(
    previous: Option<ThrottleState>,
    now_ms: i64,
    policy: &ThrottlePolicy,
) -> ThrottleState {
    let failures = match previous {
        Some(p) if now_ms - p.last_failure_ms < policy.window_ms => p.failures + 1,
        _ => 1,
    };
    let over = failures - i64::from(policy.free_failures);
    let locked_until_ms = if over > 0 {
        let doublings = u32::try_from(over - 1).unwrap_or(u32::MAX).min(40);
        let wait = policy
            .base_ms
            .saturating_mul(1_i64 << doublings)
            .min(policy.max_ms);
        now_ms + wait
    } else {
        0
    };
    ThrottleState {
        failures,
        last_failure_ms: now_ms,
        locked_until_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_after_the_free_failures_and_is_capped() {
        let policy = ThrottlePolicy {
            free_failures: 2,
            base_ms: 1000,
            max_ms: 5000,
            window_ms: 60_000,
        };
        let mut state = None;
        let mut waits = Vec::new();
        for i in 0..6 {
            let now = 1_000_000 + i * 10;
            let next = throttle_after_failure(state, now, &policy);
            waits.push(if next.locked_until_ms == 0 {
                0
            } else {
                next.locked_until_ms - now
            });
            state = Some(next);
        }
        assert_eq!(waits, [0, 0, 1000, 2000, 4000, 5000]);
        // A failure after the window starts counting again.
        let fresh = throttle_after_failure(state, 2_000_000, &policy);
        assert_eq!((fresh.failures, fresh.locked_until_ms), (1, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn password_work_runs_in_its_slots_or_is_turned_away() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let slots = Arc::new(PasswordSlots::new(2, Duration::from_secs(30)));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (slots, running, most) = (slots.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    slots
                        .run(Some(slots.wait), move || {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(20));
                            running.fetch_sub(1, Ordering::SeqCst);
                            i
                        })
                        .await
                })
            })
            .collect();
        let mut done = Vec::new();
        for task in tasks {
            done.push(task.await.ok().and_then(Result::ok).and_then(Result::ok));
        }
        assert_eq!(done, (0..8).map(Some).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), 2);

        // With the one slot held, a check waits its while and is turned
        // away; a hash waits for the slot however long it takes.
        let one = Arc::new(PasswordSlots::new(1, Duration::from_millis(20)));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let holder = {
            let one = one.clone();
            tokio::spawn(async move { one.run(None, move || hold.recv().is_ok()).await })
        };
        while one.slots.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(one.run(Some(one.wait), || ()).await.err(), Some(Busy));
        let waiting = {
            let one = one.clone();
            tokio::spawn(async move { one.run(None, || 7).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        release.send(()).ok();
        assert!(matches!(holder.await, Ok(Ok(Ok(true)))));
        assert!(matches!(waiting.await, Ok(Ok(Ok(7)))));
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), a);
        assert!(same_secret(&a, &a.clone()));
        assert!(!same_secret(&a, &b));
        assert!(!same_secret(&a, &a[..42]));
    }

    #[test]
    fn only_local_paths_follow_sign_in() {
        assert_eq!(safe_next(Some("/lines?verdict=x")), "/lines?verdict=x");
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil",
            "lines",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("x_lp_session=bad; lp_session=good; other=1"),
        );
        assert_eq!(read_cookie(&headers, "lp_session"), Some("good"));
        assert_eq!(read_cookie(&headers, "missing"), None);
    }

    #[test]
    fn forms_need_exactly_one_matching_token() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        assert!(form_token_matches(&headers, b"a=1&csrf=tok", "tok"));
        assert!(!form_token_matches(&headers, b"a=1", "tok"));
        assert!(!form_token_matches(&headers, b"csrf=tok&csrf=tok", "tok"));
        assert!(!form_token_matches(&headers, b"csrf=other", "tok"));
        assert!(!form_token_matches(&HeaderMap::new(), b"csrf=tok", "tok"));
    }
}
