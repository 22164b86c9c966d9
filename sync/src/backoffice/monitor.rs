//! Quarantine (reports that failed validation, with every reason) and the
//! probes (installations: last seen, trace engine, agent version, and the
//! endpoints their last report could not reach).

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use serde_json::Value;

use super::auth::Viewer;
use super::layout;
use super::lineref::LineRefs;
use super::lines::case_link;
use super::query::{PageQuery, QueryParams};
use super::{BackofficeState, LineCursor, storable};

/// The query of the quarantine page.
#[derive(Debug, Deserialize)]
pub(super) struct QuarantineQuery {
    before: Option<i64>,
}

impl QueryParams for QuarantineQuery {
    const PARAMS: &'static [(&'static str, &'static str)] = &[(
        "before",
        "the number of a quarantine entry (a whole number), as the \u{201c}Older\u{201d} link gives it",
    )];
}

/// `GET /quarantine`.
pub(super) async fn quarantine_page(
    State(state): State<BackofficeState>,
    Extension(viewer): Extension<Viewer>,
    PageQuery(query): PageQuery<QuarantineQuery>,
) -> Response {
    let limit = state.config().page_size;
    let rows = match state.store().quarantine_page(query.before, limit).await {
        Ok(rows) => rows,
        Err(e) => return layout::internal_error(Some(&viewer), &e),
    };
    let older = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| format!("/quarantine?before={}", r.id)))
        .flatten();
    let body = html! {
        h1 { "Quarantine 隔离区" }
        p.muted { "Reports that failed validation are kept here with every reason; nothing is dropped silently. Fix the probe (or the data) and the next report of the line is judged normally." }
        div.panel {
            table {
                thead { tr { th { "Quarantined" } th { "Collector" } th { "Report" } th { "Installation" } th { "Reasons 原因" } } }
                tbody {
                    @for row in &rows {
                        @let reasons: Vec<Value> = serde_json::from_str(&row.reasons_json).unwrap_or_default();
                        tr {
                            td.mono { (state.time(row.quarantined_at_ms)) }
                            td { (row.collector) br; span.mono.muted { (row.node_id) " #" (row.seq) } }
                            td.mono { (row.report_id.as_deref().unwrap_or("—")) }
                            td.mono { (row.install_id.as_deref().unwrap_or("—")) }
                            td {
                                @if reasons.is_empty() {
                                    (row.summary)
                                } @else {
                                    ul {
                                        @for r in &reasons {
                                            li {
                                                span.mono { (r.get("code").and_then(Value::as_str).unwrap_or("?")) }
                                                @if let Some(field) = r.get("field").and_then(Value::as_str) { " " span.mono.muted { (field) } }
                                                ": " (r.get("message").and_then(Value::as_str).unwrap_or(""))
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if rows.is_empty() { p.muted { "Nothing is in quarantine." } }
        }
        div.pager {
            @if query.before.is_some() { a href="/quarantine" { "Newest" } }
            @if let Some(older) = older { a href=(older) { "Older →" } }
        }
    };
    layout::page_response(
        StatusCode::OK,
        "Quarantine",
        Some(&viewer),
        "/quarantine",
        &body,
    )
}

/// The query of the probes page.
#[derive(Debug, Deserialize)]
pub(super) struct ProbesQuery {
    install: Option<String>,
    after: Option<String>,
}

impl QueryParams for ProbesQuery {
    const PARAMS: &'static [(&'static str, &'static str)] = &[
        ("install", "an installation ID"),
        (
            "after",
            "a page position, as the \u{201c}Next page\u{201d} link gives it",
        ),
    ];
}

/// A failed submission attempt from a report's `endpoint_attempts`.
struct Failure {
    endpoint: String,
    outcome: String,
    detail: String,
}

/// The failed attempts a report body records.
fn endpoint_failures(body: &[u8]) -> Vec<Failure> {
    let report: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    report
        .get("endpoint_attempts")
        .and_then(Value::as_array)
        .map(|attempts| {
            attempts
                .iter()
                .filter(|a| a.get("outcome").and_then(Value::as_str) != Some("ok"))
                .map(|a| Failure {
                    endpoint: a
                        .get("endpoint")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_owned(),
                    outcome: match (
                        a.get("outcome").and_then(Value::as_str),
                        a.get("http_status").and_then(Value::as_u64),
                    ) {
                        (Some(o), Some(s)) => format!("{o} {s}"),
                        (Some(o), None) => o.to_owned(),
                        _ => "?".to_owned(),
                    },
                    detail: a
                        .get("detail")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /probes`.
pub(super) async fn probes_page(
    State(state): State<BackofficeState>,
    Extension(viewer): Extension<Viewer>,
    PageQuery(query): PageQuery<ProbesQuery>,
) -> Response {
    let limit = state.config().page_size;
    let install = query
        .install
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    if let Some(install) = install.filter(|i| !storable(i)) {
        return layout::error_page(
            StatusCode::BAD_REQUEST,
            Some(&viewer),
            "Not an installation",
            &format!("{install:?} is not an installation ID; correct it and search again."),
        );
    }
    let refs = match state.line_refs().await {
        Ok(refs) => refs,
        Err(e) => return layout::internal_error(Some(&viewer), &e),
    };
    let after = query.after.as_deref().filter(|a| !a.is_empty());
    let cursor = after.and_then(|a| {
        let (ms, line) = a.split_once('.')?;
        Some(LineCursor {
            last_seen_ms: ms.parse().ok()?,
            line_key: refs.read(line).key()?,
        })
        .filter(|c| storable(&c.line_key))
    });
    // A position that is not understood is said so, not silently dropped.
    let cursor_problem = after
        .filter(|_| cursor.is_none())
        .map(|a| format!("{a:?} is not a page position; showing the first page."));
    let store = state.store();
    let (rows, latest) = match tokio::try_join!(
        store.probe_page(install, cursor.as_ref(), limit),
        store.manifest_latest(),
    ) {
        Ok(pair) => pair,
        Err(e) => return layout::internal_error(Some(&viewer), &e),
    };
    let latest_agent = latest
        .as_ref()
        .and_then(|m| serde_json::from_str::<Value>(&m.manifest_json).ok())
        .and_then(|m| {
            m.pointer("/latest_agent/version")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
    let mut failures = Vec::with_capacity(rows.len());
    for row in &rows {
        let found = match store.raw_body_by_report_id(&row.last_report_id).await {
            Ok(body) => body.map(|b| endpoint_failures(&b)).unwrap_or_default(),
            Err(e) => return layout::internal_error(Some(&viewer), &e),
        };
        failures.push(found);
    }
    let next = (rows.len() == limit as usize)
        .then(|| rows.last())
        .flatten()
        .map(|last| {
            let mut pairs = vec![(
                "after",
                format!("{}.{}", last.last_seen_ms, refs.encode(&last.line_key)),
            )];
            if let Some(i) = install {
                pairs.push(("install", i.to_owned()));
            }
            format!(
                "/probes?{}",
                serde_urlencoded::to_string(pairs).unwrap_or_default()
            )
        });
    let body = html! {
        h1 { "Probes 探针" }
        @if let Some(p) = &cursor_problem { (layout::Notice::error(p)) }
        form.filters method="get" action="/probes" {
            label { "Installation 终端 ID" input type="text" name="install" value=(install.unwrap_or("")); }
            button type="submit" { "Find" }
            a href="/probes" { "All" }
        }
        p.muted {
            "Installations by their last report, newest first. Endpoint failures are the submission attempts the last report records as failed (DNS, connect, TLS, HTTP status, timeout): interference on the path shows here."
            @if let Some(v) = &latest_agent { " The latest published agent version is " strong { (v) } "." }
        }
        (probe_table(&state, refs, &rows, &failures, latest_agent.as_deref()))
        div.pager {
            @if cursor.is_some() { a href="/probes" { "← First page" } }
            @if let Some(next) = next { a href=(next) { "Next page →" } }
        }
    };
    layout::page_response(StatusCode::OK, "Probes", Some(&viewer), "/probes", &body)
}

/// The probes with their endpoint failures.
fn probe_table(
    state: &BackofficeState,
    refs: &LineRefs,
    rows: &[crate::ProbeRow],
    failures: &[Vec<Failure>],
    latest_agent: Option<&str>,
) -> maud::Markup {
    let now = state.now_ms();
    html! {
        div.panel {
        table {
            thead { tr { th { "Installation" } th { "Line" } th { "Last seen" } th { "Engine" } th { "Agent" } th { "OS" } th.num { "Reports" } th { "Endpoint failures (last report)" } } }
            tbody {
                @for (row, fails) in rows.iter().zip(failures) {
                    tr {
                        td.mono { (row.install_id) }
                        td { a href=(case_link(refs, &row.line_key)) { (row.line_key) } }
                        td { (state.time(row.last_seen_ms)) br; span.muted { (ago(now - row.last_seen_ms)) } }
                        td { (row.engine) }
                        td {
                            (row.agent_version)
                            @if latest_agent.is_some_and(|v| v != row.agent_version) { " " span.bad { "(not latest)" } }
                        }
                        td { (row.os) }
                        td.num { (row.reports) }
                        td {
                            @if fails.is_empty() { span.ok { "none" } }
                            @else {
                                ul {
                                    @for f in fails {
                                        li { span.bad { (f.outcome) } " " span.mono { (f.endpoint) } @if !f.detail.is_empty() { " — " (f.detail) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if rows.is_empty() { p.muted { "No probe found." } }
    }
    }
}

/// How long ago, roughly.
fn ago(ms: i64) -> String {
    let minutes = ms.max(0) / 60_000;
    match minutes {
        0 => "just now".to_owned(),
        1..60 => format!("{minutes} min ago"),
        60..1440 => format!("{} h ago", minutes / 60),
        _ => format!("{} days ago", minutes / 1440),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_attempts_are_read_from_the_report() {
        let body = br#"{"endpoint_attempts":[
            {"endpoint":"https://a.example","at":"2026-11-01T00:00:00Z","outcome":"tls","detail":"bad cert"},
            {"endpoint":"https://b.example","at":"2026-11-01T00:00:01Z","outcome":"http_status","http_status":503},
            {"endpoint":"https://c.example","at":"2026-11-01T00:00:02Z","outcome":"ok"}]}"#;
        let found = endpoint_failures(body);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].outcome, "tls");
        assert_eq!(found[0].detail, "bad cert");
        assert_eq!(found[1].outcome, "http_status 503");
        assert!(endpoint_failures(b"{}").is_empty());
        assert!(endpoint_failures(b"not json").is_empty());
    }

    #[test]
    fn ages() {
        assert_eq!(ago(10_000), "just now");
        assert_eq!(ago(5 * 60_000), "5 min ago");
        assert_eq!(ago(3 * 3_600_000), "3 h ago");
        assert_eq!(ago(2 * 86_400_000), "2 days ago");
    }
}
