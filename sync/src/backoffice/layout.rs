//! The frame every page shares (navigation, the user and the sign-out
//! form), the stylesheet, error pages, security headers, and how values are
//! shown: times at the configured offset, verdicts, catalog names.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Offset as _;
use lineprobe_shared::{CarrierId, Catalog, CityCode, ProvinceCode};
use maud::{DOCTYPE, Markup, Render, html};

use super::auth::Viewer;
use super::{BackofficeState, html_type};
use crate::Error;

/// The five verdicts, in the order they are decided.
pub(super) const VERDICTS: [&str; 5] = [
    "proxy_suspected",
    "non_compliant",
    "violating_ip",
    "compliant",
    "indeterminate",
];

/// A verdict's Chinese and English labels and its colour.
pub(super) fn verdict_style(verdict: &str) -> (&'static str, &'static str, &'static str) {
    match verdict {
        "compliant" => ("合规", "compliant", "#2e7d32"),
        "non_compliant" => ("不合规", "non-compliant", "#c62828"),
        "violating_ip" => ("IP 违规使用", "violating IP", "#ef6c00"),
        "proxy_suspected" => ("疑似代理", "proxy suspected", "#6a1b9a"),
        "indeterminate" => ("无法判定", "indeterminate", "#757575"),
        _ => ("?", "unknown", "#757575"),
    }
}

/// A verdict as a coloured badge.
pub(super) fn verdict_badge(verdict: &str) -> Markup {
    let (zh, en, _) = verdict_style(verdict);
    html! { span class={"badge v-" (verdict)} title=(en) { (zh) " · " (en) } }
}

/// The mark of a verdict from a low-trust source: shown beside the verdict,
/// never instead of it.
pub(super) fn low_trust_badge() -> Markup {
    html! {
        span.badge.low-trust title="from a low-trust source: the collector saw anomalous traffic, rejected reports, a missing signature or a changed key" {
            "低可信 · low trust"
        }
    }
}

/// A carrier id as its Chinese name (the id when unknown).
pub(super) fn carrier_name(catalog: &Catalog, id: &str) -> String {
    CarrierId::new(id)
        .ok()
        .and_then(|c| catalog.carrier_by_id(&c).map(|c| c.name_zh.clone()))
        .unwrap_or_else(|| id.to_owned())
}

/// A province code as its Chinese name (the code when unknown).
pub(super) fn province_name(catalog: &Catalog, code: &str) -> String {
    ProvinceCode::new(code)
        .ok()
        .and_then(|p| catalog.province_by_id(&p).map(|p| p.name_zh.clone()))
        .unwrap_or_else(|| code.to_owned())
}

/// A city code as its Chinese name (other text as it is).
pub(super) fn city_name(catalog: &Catalog, city: &str) -> String {
    CityCode::new(city)
        .ok()
        .and_then(|code| catalog.city_by_code(&code))
        .map_or_else(|| city.to_owned(), |c| c.name_zh.clone())
}

/// An optional catalog value through `name`, or a dash.
pub(super) fn or_dash(value: Option<&str>, name: impl Fn(&str) -> String) -> String {
    value.map_or_else(|| "—".to_owned(), name)
}

impl BackofficeState {
    /// The configured display offset.
    pub(super) fn offset(&self) -> chrono::FixedOffset {
        chrono::FixedOffset::east_opt(self.config().utc_offset_minutes * 60)
            .unwrap_or_else(|| chrono::Utc.fix())
    }

    /// A Unix ms time at the display offset, to the second.
    pub(super) fn time(&self, ms: i64) -> String {
        chrono::DateTime::from_timestamp_millis(ms).map_or_else(
            || "—".to_owned(),
            |t| {
                t.with_timezone(&self.offset())
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
            },
        )
    }

    /// The display offset as `UTC+08:00`.
    pub(super) fn offset_label(&self) -> String {
        format!("UTC{}", self.offset())
    }
}

/// A message box on a page.
#[derive(Debug, Clone)]
pub(super) struct Notice {
    error: bool,
    text: String,
}

impl Notice {
    pub(super) fn error(text: &str) -> Self {
        Self {
            error: true,
            text: text.to_owned(),
        }
    }

    pub(super) fn info(text: &str) -> Self {
        Self {
            error: false,
            text: text.to_owned(),
        }
    }
}

impl Render for Notice {
    fn render(&self) -> Markup {
        html! {
            p class=(if self.error { "notice error" } else { "notice info" }) role="status" { (self.text) }
        }
    }
}

/// The hidden anti-forgery field every form of a signed-in page carries.
pub(super) fn csrf_field(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.csrf); }
}

/// A whole page: the frame around `body`.
pub(super) fn page_response(
    status: StatusCode,
    title: &str,
    viewer: Option<&Viewer>,
    active: &str,
    body: &Markup,
) -> Response {
    let nav = [
        ("/", "Dashboard 总览", false),
        ("/lines", "Lines 线路", false),
        ("/quarantine", "Quarantine 隔离", false),
        ("/probes", "Probes 探针", false),
        ("/traffic", "Traffic 流量", false),
        ("/config", "Probe configuration 探针配置", true),
        ("/users", "Users 用户", true),
        ("/audit", "Audit log 审计", true),
    ];
    let markup = html! {
        (DOCTYPE)
        html lang="zh-CN" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " — LineProbe" }
                link rel="stylesheet" href="/assets/app.css";
            }
            body {
                @if let Some(viewer) = viewer {
                    header.top {
                        a.brand href="/" { "LineProbe" }
                        nav {
                            @for (href, label, admin_only) in nav {
                                @if !admin_only || viewer.is_admin() {
                                    a href=(href) class=(if href == active { "active" } else { "" }) { (label) }
                                }
                            }
                        }
                        div.who {
                            a href="/account" { (viewer.name) " (" (viewer.role.as_str()) ")" }
                            form.inline method="post" action="/logout" {
                                (csrf_field(viewer))
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    (status, [html_type()], markup.into_string()).into_response()
}

/// An error page.
pub(super) fn error_page(
    status: StatusCode,
    viewer: Option<&Viewer>,
    title: &str,
    message: &str,
) -> Response {
    let body = html! {
        h1 { (title) }
        p { (message) }
        p { a href="/" { "Back to the dashboard" } }
    };
    page_response(status, title, viewer, "", &body)
}

/// A 500 page; the details go to the log, not to the browser.
pub(super) fn internal_error(viewer: Option<&Viewer>, error: &Error) -> Response {
    tracing::error!(error = %error, "back office request failed");
    error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        viewer,
        "Something went wrong",
        "The back office could not answer this request; the details are in its log. Try again \
         shortly.",
    )
}

/// The answer to a path no page has (signed-in users only).
pub(super) async fn not_found(viewer: Option<axum::Extension<Viewer>>) -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        viewer.as_ref().map(|v| &v.0),
        "Not found",
        "There is no such page.",
    )
}

/// Headers every answer carries: no scripts, frames or foreign resources,
/// no referrer (line keys are personal data), nothing cached.
pub(super) async fn security_headers(
    State(state): State<BackofficeState>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let defaults = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if state.inner.secure_cookies {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

/// `GET /assets/app.css`.
pub(super) async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}

const STYLESHEET: &str = r#"
:root { --fg:#1d2330; --muted:#5f6b7a; --line:#d9dee5; --bg:#f6f7f9; --accent:#1f5fa8; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.5 system-ui, "Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", sans-serif; color:var(--fg); background:var(--bg); }
header.top { display:flex; align-items:center; gap:1.5rem; padding:.5rem 1.25rem; background:#1d2330; color:#fff; flex-wrap:wrap; }
header.top a { color:#cfd8e3; text-decoration:none; }
header.top a.brand { color:#fff; font-weight:700; }
header.top nav { display:flex; gap:1rem; flex-wrap:wrap; }
header.top nav a.active { color:#fff; border-bottom:2px solid #fff; }
header.top .who { margin-left:auto; display:flex; gap:.75rem; align-items:center; color:#cfd8e3; }
main { padding:1.25rem; max-width:1400px; margin:0 auto; }
h1 { font-size:1.4rem; margin:.2rem 0 1rem; }
h2 { font-size:1.1rem; margin:1.5rem 0 .5rem; }
.muted { color:var(--muted); }
sup.filled { color:var(--accent); cursor:help; }
.notice { padding:.6rem .9rem; border-radius:4px; }
.notice.error { background:#fdecea; border:1px solid #f5c2bd; }
.notice.info { background:#e8f1fb; border:1px solid #bcd5f0; }
table { border-collapse:collapse; width:100%; background:#fff; }
th, td { text-align:left; padding:.35rem .5rem; border-bottom:1px solid var(--line); vertical-align:top; }
/* Values come from probes: a direction override in one stays in its cell. */
td, dd { unicode-bidi: isolate; }
th { background:#eef1f5; font-weight:600; }
td.num, th.num { text-align:right; font-variant-numeric: tabular-nums; }
.badge { display:inline-block; padding:0 .45rem; border-radius:3px; color:#fff; font-size:.85em; white-space:nowrap; }
.badge.low-trust { background:#fff; color:#8a5300; border:1px dashed #8a5300; margin-left:.25rem; }
.v-compliant { background:#2e7d32; } .v-non_compliant { background:#c62828; } .v-violating_ip { background:#ef6c00; }
.v-proxy_suspected { background:#6a1b9a; } .v-indeterminate { background:#757575; }
.cards { display:grid; grid-template-columns: repeat(auto-fit, minmax(160px, 1fr)); gap:.75rem; margin-bottom:1rem; }
.card { background:#fff; border:1px solid var(--line); border-radius:6px; padding:.75rem; }
.card .big { font-size:1.6rem; font-weight:700; }
.panel { background:#fff; border:1px solid var(--line); border-radius:6px; padding:.75rem 1rem; margin-bottom:1rem; overflow-x:auto; }
.grid2 { display:grid; grid-template-columns: 1fr 1fr; gap:1rem; }
@media (max-width: 900px) { .grid2 { grid-template-columns: 1fr; } }
form.filters { display:flex; flex-wrap:wrap; gap:.5rem 1rem; align-items:flex-end; background:#fff; border:1px solid var(--line); border-radius:6px; padding:.75rem; margin-bottom:1rem; }
form.filters label { display:flex; flex-direction:column; font-size:.85em; color:var(--muted); }
label { display:block; margin:.4rem 0; }
input[type=text], input[type=password], input[type=number], input[type=date], select, textarea { font:inherit; padding:.3rem .4rem; border:1px solid #b8c1cc; border-radius:3px; background:#fff; }
textarea { width:100%; }
button, .button { font:inherit; padding:.35rem .9rem; border:1px solid var(--accent); background:var(--accent); color:#fff; border-radius:3px; cursor:pointer; text-decoration:none; display:inline-block; }
button.secondary, .button.secondary { background:#fff; color:var(--accent); }
button.link { background:none; border:none; color:#cfd8e3; padding:0; text-decoration:underline; }
form.inline { display:inline; }
section.login { max-width:380px; margin:4rem auto; background:#fff; border:1px solid var(--line); border-radius:6px; padding:1.5rem; }
section.login input { width:100%; }
.pager { display:flex; gap:1rem; margin:.75rem 0; align-items:center; }
dl.facts { display:grid; grid-template-columns: max-content 1fr; gap:.2rem 1rem; margin:0; }
dl.facts dt { color:var(--muted); }
.legend span { margin-right:1rem; white-space:nowrap; }
.legend i { display:inline-block; width:.8em; height:.8em; margin-right:.3em; vertical-align:-.05em; }
.lg-compliant { background:#2e7d32; } .lg-non_compliant { background:#c62828; } .lg-violating_ip { background:#ef6c00; }
.lg-proxy_suspected { background:#6a1b9a; } .lg-indeterminate { background:#757575; }
.ok { color:#2e7d32; } .bad { color:#c62828; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size:.92em; }
.print-only { display:none; }
@media print {
  header.top, form, .noprint, .pager { display:none !important; }
  body { background:#fff; font-size:11pt; }
  main { padding:0; max-width:none; }
  .panel, table { border:1px solid #999; break-inside: avoid; }
  .print-only { display:block; }
  .badge { color:#000; border:1px solid #000; background:none !important; }
  a { color:#000; text-decoration:none; }
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verdict_has_labels_and_a_style() {
        for v in VERDICTS {
            let (zh, en, colour) = verdict_style(v);
            assert_ne!(zh, "?");
            assert!(!en.is_empty() && colour.starts_with('#'));
            assert!(STYLESHEET.contains(&format!(".v-{v}")), "{v}");
        }
        assert!(
            verdict_badge("<script>")
                .into_string()
                .contains("&lt;script&gt;")
        );
    }
}
