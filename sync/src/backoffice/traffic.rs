//! Traffic defences: what each collector reports about anomaly episodes
//! (a flood is one event with its degree, not sixty minutes) and about the
//! sources it trusts little now. Asked live from the collectors' export API,
//! outbound like everything else the internal side does.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};

use super::BackofficeState;
use super::auth::Viewer;
use super::layout;
use crate::{CollectorClient, Error, TrafficView};

/// Most episodes and sources shown per collector.
const SHOWN: usize = 100;

/// `GET /traffic`.
pub(super) async fn page(
    State(state): State<BackofficeState>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    let asks = state
        .inner
        .collectors
        .iter()
        .filter(|c| c.enabled)
        .map(|endpoint| async move {
            let view = match CollectorClient::new(endpoint) {
                Ok(client) => client.traffic(SHOWN).await,
                Err(e) => Err(e),
            };
            (endpoint.name.clone(), view)
        });
    let views = futures_util::future::join_all(asks).await;
    let body = html! {
        h1 { "Traffic 流量防护" }
        p.muted {
            "Each collector learns every source's normal traffic per minute (source prefix, probe installation, path) "
            "and groups the minutes outside it into anomaly episodes; units in an episode are throttled against their own budget, "
            "and their trust drops. Verdicts from low-trust sources are marked in the lines and the reports."
        }
        @if views.is_empty() { (layout::Notice::info("No collector is configured.")) }
        @for (name, view) in &views {
            h2 { "Collector " span.mono { (name) } }
            @match view {
                Ok(v) => (collector_view(&state, v)),
                Err(e) => (layout::Notice::error(&unreachable(e))),
            }
        }
    };
    layout::page_response(StatusCode::OK, "Traffic", Some(&viewer), "/traffic", &body)
}

fn unreachable(e: &Error) -> String {
    format!("Could not read its traffic view: {e}")
}

fn collector_view(state: &BackofficeState, v: &TrafficView) -> Markup {
    let time = |t: &chrono::DateTime<chrono::Utc>| state.time(t.timestamp_millis());
    html! {
        p { (v.open) " anomaly episode(s) open now; " (v.opened_since_start) " opened since the collector started." }
        h3 { "Anomaly episodes 异常事件" }
        @if v.episodes.is_empty() {
            p.muted { "None." }
        } @else {
            div.panel { table {
                thead { tr {
                    th { "Unit" } th { "Started" } th { "Last anomalous minute" } th { "State" }
                    th.num { "Peak degree" } th.num { "Peak req/min" } th.num { "Normal req/min" }
                    th.num { "Requests" } th.num { "Throttled (429)" } th.num { "Rejected" }
                } }
                tbody {
                    @for e in &v.episodes {
                        tr {
                            td { span.muted { (e.kind) " " } span.mono { (e.unit) } }
                            td.mono { (time(&e.started_at)) }
                            td.mono { (time(&e.last_anomalous_at)) }
                            td { @if e.ongoing { strong { "ongoing" } } @else if let Some(end) = &e.ended_at { "ended " (time(end)) } }
                            td.num { (format!("{:.1}", e.peak_degree)) }
                            td.num { (e.peak_requests_per_minute) }
                            td.num { (format!("{:.1}", e.baseline_per_minute)) }
                            td.num { (e.requests) }
                            td.num { (e.throttled) }
                            td.num { (e.rejects) }
                        }
                    }
                }
            } }
        }
        h3 { "Low-trust sources 低可信来源" }
        @if v.low_trust.is_empty() {
            p.muted { "None." }
        } @else {
            div.panel { table {
                thead { tr {
                    th { "Unit" } th.num { "Trust" } th.num { "Accepted" } th.num { "Rejected" }
                    th.num { "Episodes" } th { "Last seen" } th { "Now" }
                } }
                tbody {
                    @for u in &v.low_trust {
                        tr {
                            td { span.muted { (u.kind) " " } span.mono { (u.unit) } }
                            td.num { (u.score) "/100" }
                            td.num { (u.accepted) }
                            td.num { (u.rejects) }
                            td.num { (u.anomalies) }
                            td.mono { (state.time(u.last_seen_at.timestamp_millis())) }
                            td { @if u.in_episode { strong { "in an episode" } } }
                        }
                    }
                }
            } }
        }
    }
}
