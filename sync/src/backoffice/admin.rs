//! Users and the audit log (admins), and each user's own password.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Redirect, Response};
use axum::{Extension, Form};
use maud::html;
use serde::Deserialize;

use super::accounts::{Role, check_name, check_password, same_name};
use super::auth::{Attempt, BUSY_RETRY_AFTER_S, Viewer, attempt, throttle_keys, turned_away};
use super::layout::{self, Notice, csrf_field};
use super::query::{PageQuery, QueryParams};
use super::{BackofficeState, storable};
use crate::store::backoffice::UserChanged;

/// Audit entries per page.
const AUDIT_PAGE: u32 = 100;

/// The actions the audit log records, for its filter.
const AUDIT_ACTIONS: [&str; 17] = [
    "login",
    "login_failed",
    "logout",
    "access_denied",
    "export_csv",
    "export_xlsx",
    "manifest_publish",
    "manifest_publish_result",
    "manifest_republish",
    "manifest_republish_result",
    "user_add",
    "user_passwd",
    "user_disable",
    "user_enable",
    "user_role",
    "password_change",
    "password_change_failed",
];

/// Why a change to a user was refused when it would have left no enabled
/// admin: the words of the command line's warning, said before instead of
/// after.
const LAST_ADMIN: &str = "Not changed: no enabled admin would be left. Make another \
     user admin (or enable one) first.";

/// The query of a page that a form redirects back to (users, account):
/// what was just done, for the notice.
#[derive(Debug, Deserialize)]
pub(super) struct DoneQuery {
    done: Option<String>,
}

impl QueryParams for DoneQuery {
    const PARAMS: &'static [(&'static str, &'static str)] = &[(
        "done",
        "what was just done, as the page a form sent you back to names it",
    )];
}

/// `GET /users`.
pub(super) async fn users_page(
    State(state): State<BackofficeState>,
    Extension(viewer): Extension<Viewer>,
    PageQuery(query): PageQuery<DoneQuery>,
) -> Response {
    let notice = query.done.as_deref().map(|done| match done {
        "added" => Notice::info("User added."),
        "disabled" => Notice::info("User disabled; their sessions ended."),
        "enabled" => Notice::info("User enabled."),
        "role" => Notice::info("Role changed; the user's sessions ended."),
        _ => Notice::info("Done."),
    });
    users_response(&state, &viewer, StatusCode::OK, notice).await
}

async fn users_response(
    state: &BackofficeState,
    viewer: &Viewer,
    status: StatusCode,
    notice: Option<Notice>,
) -> Response {
    let users = match state.store().users().await {
        Ok(users) => users,
        Err(e) => return layout::internal_error(Some(viewer), &e),
    };
    let body = html! {
        h1 { "Users 用户" }
        @if let Some(notice) = &notice { (notice) }
        div.panel {
            table {
                thead { tr { th { "Name" } th { "Role" } th { "Status" } th { "Created" } th { "Last sign-in" } th.noprint { "Change" } } }
                tbody {
                    @for user in &users {
                        tr {
                            td { (user.name) }
                            td { (user.role) }
                            td { @if user.disabled { span.bad { "disabled" } } @else { span.ok { "active" } } }
                            td { (state.time(user.created_at_ms)) }
                            td { (user.last_login_at_ms.map_or_else(|| "never".to_owned(), |t| state.time(t))) }
                            td.noprint {
                                @if user.name == viewer.name {
                                    span.muted { "(you)" }
                                } @else {
                                    form.inline method="post" action="/users/change" {
                                        (csrf_field(viewer))
                                        input type="hidden" name="name" value=(user.name);
                                        @if user.disabled {
                                            button.secondary type="submit" name="action" value="enable" { "Enable" }
                                        } @else {
                                            button.secondary type="submit" name="action" value="disable" { "Disable" }
                                        }
                                        " "
                                        @if user.role == "admin" {
                                            button.secondary type="submit" name="action" value="make_viewer" { "Make viewer" }
                                        } @else {
                                            button.secondary type="submit" name="action" value="make_admin" { "Make admin" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Add a user" }
        div.panel {
            form method="post" action="/users" {
                (csrf_field(viewer))
                label { "Name " input type="text" name="name" required maxlength="64" autocomplete="off"; }
                label { "Role "
                    select name="role" {
                        option value="viewer" { "viewer — reads every page but these" }
                        option value="admin" { "admin — also probe configuration, users, audit log" }
                    }
                }
                label { "Password (12 characters or more) " input type="password" name="password" required autocomplete="new-password"; }
                label { "The same password again " input type="password" name="again" required autocomplete="new-password"; }
                button type="submit" { "Add user" }
            }
            p.muted { "Users can also be managed with " code { "lineprobe-sync user add|passwd|disable|enable|role|list" } "." }
        }
    };
    layout::page_response(status, "Users", Some(viewer), "/users", &body)
}

/// The users page again, a 400 with the form's mistake on top.
async fn refused(state: &BackofficeState, viewer: &Viewer, text: &str) -> Response {
    users_response(
        state,
        viewer,
        StatusCode::BAD_REQUEST,
        Some(Notice::error(text)),
    )
    .await
}

/// The add-user form.
#[derive(Debug, Deserialize)]
pub(super) struct AddUserForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    again: String,
}

/// `POST /users`.
pub(super) async fn add_user(
    State(state): State<BackofficeState>,
    Extension(viewer): Extension<Viewer>,
    Form(form): Form<AddUserForm>,
) -> Response {
    let name = form.name.trim();
    let Some(role) = Role::parse(&form.role) else {
        return refused(&state, &viewer, "Choose a role: viewer or admin.").await;
    };
    if let Err(e) = check_name(name) {
        return refused(&state, &viewer, &e.to_string()).await;
    }
    match same_name(state.store(), name).await {
        Ok(Some(existing)) => {
            let text = format!("A user named {existing:?} exists.");
            return refused(&state, &viewer, &text).await;
        }
        Ok(None) => {}
        Err(e) => return layout::internal_error(Some(&viewer), &e),
    }
    if form.password != form.again {
        return refused(&state, &viewer, "The two passwords differ.").await;
    }
    if let Err(e) = check_password(name, &form.password) {
        return refused(&state, &viewer, &format!("Not added: {e}.")).await;
    }
    let hash = match state.hash_new_password(form.password).await {
        Ok(hash) => hash,
        Err(e) => return layout::internal_error(Some(&viewer), &e),
    };
    match state
        .store()
        .user_insert(name, role.as_str(), &hash, state.now_ms())
        .await
    {
        Ok(Some(_)) => {}
        Ok(None) => {
            return refused(&state, &viewer, &format!("A user named {name:?} exists.")).await;
        }
        Err(e) => return layout::internal_error(Some(&viewer), &e),
    }
    state
        .audit(
            &viewer.name,
            "user_add",
            &viewer.ip,
            serde_json::json!({ "user": name, "role": role.as_str() }),
        )
        .await;
    Redirect::to("/users?done=added").into_response()
}

/// A change to one user.
#[derive(Debug, Deserialize)]
pub(super) struct ChangeUserForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    action: String,
}

/// `POST /users/change`: disable, enable, make admin or viewer.
pub(super) async fn change_user(
    State(state): State<BackofficeState>,
    Extension(viewer): Extension<Viewer>,
    Form(form): Form<ChangeUserForm>,
) -> Response {
    if form.name == viewer.name {
        return refused(
            &state,
            &viewer,
            "You cannot change your own account here; ask another admin.",
        )
        .await;
    }
    let store = state.store();
    // A name with a NUL is no user's, and PostgreSQL fails the query.
    let found = if storable(&form.name) {
        store.user_by_name(&form.name).await
    } else {
        Ok(None)
    };
    let user = match found {
        Ok(Some(user)) => user,
        Ok(None) => return refused(&state, &viewer, "There is no such user.").await,
        Err(e) => return layout::internal_error(Some(&viewer), &e),
    };
    let now = state.now_ms();
    // Each change that can take an admin away is made only while another
    // enabled admin remains, in one guarded step: two admins disabling or
    // demoting each other at once cannot both succeed.
    let (result, action, done) = match form.action.as_str() {
        "disable" => (
            store
                .user_set_disabled_keeping_an_admin(&user.name, true, now)
                .await,
            "user_disable",
            "disabled",
        ),
        "enable" => (
            store
                .user_set_disabled_keeping_an_admin(&user.name, false, now)
                .await,
            "user_enable",
            "enabled",
        ),
        "make_admin" => (
            store
                .user_set_role_keeping_an_admin(&user.name, "admin", now)
                .await,
            "user_role",
            "role",
        ),
        "make_viewer" => (
            store
                .user_set_role_keeping_an_admin(&user.name, "viewer", now)
                .await,
            "user_role",
            "role",
        ),
        _ => return refused(&state, &viewer, "Unknown change.").await,
    };
    match result {
        Ok(UserChanged::Changed) => {}
        // Gone since it was looked up.
        Ok(UserChanged::NoSuchUser) => {
            return refused(&state, &viewer, "There is no such user.").await;
        }
        Ok(UserChanged::LastAdmin) => return refused(&state, &viewer, LAST_ADMIN).await,
        Err(e) => return layout::internal_error(Some(&viewer), &e),
    }
    state
        .audit(
            &viewer.name,
            action,
            &viewer.ip,
            serde_json::json!({ "user": user.name, "change": form.action }),
        )
        .await;
    Redirect::to(&format!("/users?done={done}")).into_response()
}

/// The query of the audit page.
#[derive(Debug, Deserialize)]
pub(super) struct AuditQuery {
    action: Option<String>,
    before: Option<i64>,
}

impl QueryParams for AuditQuery {
    const PARAMS: &'static [(&'static str, &'static str)] = &[
        ("action", "one action of the filter\u{2019}s list"),
        (
            "before",
            "the number of an audit entry (a whole number), as the \u{201c}Older\u{201d} link gives it",
        ),
    ];
}

/// `GET /audit`.
pub(super) async fn audit_page(
    State(state): State<BackofficeState>,
    Extension(viewer): Extension<Viewer>,
    PageQuery(query): PageQuery<AuditQuery>,
) -> Response {
    let action = query
        .action
        .as_deref()
        .filter(|a| AUDIT_ACTIONS.contains(a));
    let rows = match state
        .store()
        .audit_page(query.before, action, AUDIT_PAGE)
        .await
    {
        Ok(rows) => rows,
        Err(e) => return layout::internal_error(Some(&viewer), &e),
    };
    let older = (rows.len() == AUDIT_PAGE as usize)
        .then(|| rows.last().map(|r| r.id))
        .flatten()
        .map(|id| {
            let mut pairs = vec![("before", id.to_string())];
            if let Some(a) = action {
                pairs.push(("action", a.to_owned()));
            }
            format!(
                "/audit?{}",
                serde_urlencoded::to_string(pairs).unwrap_or_default()
            )
        });
    let body = html! {
        h1 { "Audit log 审计日志" }
        form.filters method="get" action="/audit" {
            label { "Action"
                select name="action" {
                    option value="" { "all" }
                    @for a in AUDIT_ACTIONS {
                        option value=(a) selected[action == Some(a)] { (a) }
                    }
                }
            }
            button type="submit" { "Show" }
        }
        div.panel {
            table {
                thead { tr { th { "Time (" (state.offset_label()) ")" } th { "Who" } th { "Action" } th { "From" } th { "Details" } } }
                tbody {
                    @for row in &rows {
                        tr {
                            td.mono { (state.time(row.at_ms)) }
                            td { (row.actor) }
                            td { (row.action) }
                            td.mono { (row.source_ip) }
                            td.mono { (row.detail_json) }
                        }
                    }
                }
            }
            @if rows.is_empty() { p.muted { "No entries." } }
        }
        div.pager {
            @if query.before.is_some() { a href="/audit" { "Newest" } }
            @if let Some(older) = older { a href=(older) { "Older →" } }
        }
    };
    layout::page_response(StatusCode::OK, "Audit log", Some(&viewer), "/audit", &body)
}

/// `GET /account`: one's own password.
pub(super) async fn account_page(
    State(state): State<BackofficeState>,
    Extension(viewer): Extension<Viewer>,
    PageQuery(query): PageQuery<DoneQuery>,
) -> Response {
    let _ = &state;
    account_response(
        &viewer,
        StatusCode::OK,
        query
            .done
            .is_some()
            .then(|| Notice::info("Password changed."))
            .as_ref(),
    )
}

fn account_response(viewer: &Viewer, status: StatusCode, notice: Option<&Notice>) -> Response {
    let body = html! {
        h1 { "Your account" }
        p { "Signed in as " strong { (viewer.name) } " (" (viewer.role.as_str()) ")." }
        @if let Some(notice) = &notice { (notice) }
        h2 { "Change your password" }
        div.panel {
            form method="post" action="/account/password" {
                (csrf_field(viewer))
                label { "Current password " input type="password" name="current" required autocomplete="current-password"; }
                label { "New password (12 characters or more) " input type="password" name="password" required autocomplete="new-password"; }
                label { "The new password again " input type="password" name="again" required autocomplete="new-password"; }
                button type="submit" { "Change password" }
            }
            p.muted { "Changing it signs you out everywhere; sign in again with the new one." }
        }
    };
    layout::page_response(status, "Account", Some(viewer), "/account", &body)
}

/// The password change form.
#[derive(Debug, Deserialize)]
pub(super) struct PasswordForm {
    #[serde(default)]
    current: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    again: String,
}

/// The audit reason of a refused current password: as on the sign-in form,
/// but a wrong password is named for the field it was typed in.
fn current_reason(reason: &'static str) -> &'static str {
    if reason == "bad_password" {
        "bad_current_password"
    } else {
        reason
    }
}

/// `POST /account/password`.
///
/// The current password is checked like a sign-in, under the same throttle:
/// it is what stands between a stolen session and the account, so guessing
/// it here must be as slow as guessing it on the sign-in form.
pub(super) async fn change_own_password(
    State(state): State<BackofficeState>,
    Extension(viewer): Extension<Viewer>,
    Form(form): Form<PasswordForm>,
) -> Response {
    let keys = match throttle_keys(state.store(), &viewer.name, &viewer.ip).await {
        Ok(keys) => keys,
        Err(e) => return layout::internal_error(Some(&viewer), &e),
    };
    let checked = match attempt(&state, &viewer.name, form.current, &keys).await {
        Ok(checked) => checked,
        Err(e) => return layout::internal_error(Some(&viewer), &e),
    };
    let problem = match checked {
        Attempt::Throttled { wait_s } => {
            let notice = Notice::error(&format!(
                "Too many wrong passwords for this account or from this address. Wait \
                 {wait_s} seconds, then try again."
            ));
            let page = account_response(&viewer, StatusCode::TOO_MANY_REQUESTS, Some(&notice));
            let why = ("password_change_failed", "throttled");
            return turned_away(&state, &viewer.name, &viewer.ip, why, wait_s, page).await;
        }
        Attempt::Busy => {
            let notice = Notice::error(&format!(
                "The back office is busy checking other passwords. Wait {BUSY_RETRY_AFTER_S} \
                 seconds, then try again."
            ));
            let page = account_response(&viewer, StatusCode::SERVICE_UNAVAILABLE, Some(&notice));
            let (why, wait_s) = (("password_change_failed", "busy"), BUSY_RETRY_AFTER_S);
            return turned_away(&state, &viewer.name, &viewer.ip, why, wait_s, page).await;
        }
        Attempt::Failed { reason, failures } => {
            state
                .audit(
                    &viewer.name,
                    "password_change_failed",
                    &viewer.ip,
                    serde_json::json!({ "reason": current_reason(reason), "failures": failures }),
                )
                .await;
            Some("The current password is wrong.".to_owned())
        }
        Attempt::Passed(_) if form.password != form.again => {
            Some("The two new passwords differ.".to_owned())
        }
        Attempt::Passed(_) => check_password(&viewer.name, &form.password)
            .err()
            .map(|e| format!("Not changed: {e}.")),
    };
    if let Some(problem) = problem {
        return account_response(
            &viewer,
            StatusCode::BAD_REQUEST,
            Some(&Notice::error(&problem)),
        );
    }
    let hash = match state.hash_new_password(form.password).await {
        Ok(hash) => hash,
        Err(e) => return layout::internal_error(Some(&viewer), &e),
    };
    if let Err(e) = state
        .store()
        .user_set_password(&viewer.name, &hash, state.now_ms())
        .await
    {
        return layout::internal_error(Some(&viewer), &e);
    }
    state
        .audit(
            &viewer.name,
            "password_change",
            &viewer.ip,
            serde_json::json!({}),
        )
        .await;
    Redirect::to("/login").into_response()
}
