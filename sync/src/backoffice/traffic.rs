//! Traffic defences: what each collector reports about anomaly episodes
//! (a flood is one event with its degree, not sixty minutes) and about the
//! sources it trusts little now. Asked from the collectors' export API,
//! outbound like everything else the internal side does.
//!
//! Each collector's answer is kept for `backoffice.traffic_max_age_s` and
//! shared by every viewer: a busy page asks each collector at most once in
//! that time, and viewers arriving while a collector is being asked wait for
//! that same request (never one of their own). A collector that is down
//! answers with its error once in that time too, so only the first viewer after
//! that waits its timeout. The page says how old each answer is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use maud::{Markup, html};

use super::BackofficeState;
use super::auth::Viewer;
use super::layout;
use crate::{CollectorClient, CollectorEndpoint, Error, TrafficView};

/// Most episodes and sources shown per collector.
const SHOWN: usize = 100;

/// One collector's answer, as read at `fetched_at_ms`.
#[derive(Debug)]
pub(super) struct Answer {
    /// When the collector was asked (the state's clock, Unix ms).
    fetched_at_ms: i64,
    /// Its traffic view, or why it could not be read.
    view: Result<TrafficView, String>,
}

/// The request to a collector under way, shared by every viewer waiting.
type InFlight = Shared<BoxFuture<'static, Arc<Answer>>>;

/// One collector's newest answer and the request under way.
#[derive(Default)]
struct Slot {
    last: Option<Arc<Answer>>,
    in_flight: Option<InFlight>,
}

/// The collectors' answers, by collector name.
#[derive(Default)]
pub(super) struct Cache {
    slots: Mutex<HashMap<String, Slot>>,
}

impl Cache {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl BackofficeState {
    /// How long a collector's answer (or its error) is shown before the
    /// collector is asked again, in ms.
    fn traffic_max_age_ms(&self) -> i64 {
        i64::try_from(self.config().traffic_max_age_s).unwrap_or(600) * 1000
    }

    /// `endpoint`'s traffic view: the one in memory while younger than
    /// `traffic_max_age_s`, else the request under way, else a new request. The
    /// request runs on its own task, so that it finishes (and is kept) even
    /// when every viewer waiting for it has gone.
    async fn traffic_of(&self, endpoint: &CollectorEndpoint) -> Arc<Answer> {
        let now = self.now_ms();
        let max_age_ms = self.traffic_max_age_ms();
        let request = {
            let mut slots = self.inner.traffic.slots();
            let slot = slots.entry(endpoint.name.clone()).or_default();
            if let Some(last) = slot
                .last
                .as_ref()
                .filter(|a| (0..max_age_ms).contains(&(now - a.fetched_at_ms)))
            {
                return Arc::clone(last);
            }
            if let Some(request) = &slot.in_flight {
                request.clone()
            } else {
                let request = self.ask(endpoint);
                slot.in_flight = Some(request.clone());
                request
            }
        };
        request.await
    }

    /// Asks `endpoint`'s collector on a task of its own; the answer goes
    /// into the cache when it comes.
    fn ask(&self, endpoint: &CollectorEndpoint) -> InFlight {
        let state = self.clone();
        let endpoint = endpoint.clone();
        let name = endpoint.name.clone();
        let task = tokio::spawn(async move {
            let fetched_at_ms = state.now_ms();
            let view = match CollectorClient::new(&endpoint) {
                Ok(client) => client.traffic(SHOWN).await,
                Err(e) => Err(e),
            };
            let answer = Arc::new(Answer {
                fetched_at_ms,
                view: view.map_err(|e| unreachable(&e)),
            });
            let mut slots = state.inner.traffic.slots();
            let slot = slots.entry(endpoint.name.clone()).or_default();
            slot.last = Some(Arc::clone(&answer));
            slot.in_flight = None;
            answer
        });
        let state = self.clone();
        async move {
            task.await.unwrap_or_else(|e| {
                // The task failed before it could record anything: the
                // next viewer asks again.
                let answer = Arc::new(Answer {
                    fetched_at_ms: state.now_ms(),
                    view: Err(format!("Could not read its traffic view: {e}")),
                });
                if let Some(slot) = state.inner.traffic.slots().get_mut(&name) {
                    slot.in_flight = None;
                }
                answer
            })
        }
        .boxed()
        .shared()
    }
}

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
        .map(|endpoint| {
            let state = &state;
            async move { (endpoint.name.clone(), state.traffic_of(endpoint).await) }
        });
    let views = futures_util::future::join_all(asks).await;
    let now = state.now_ms();
    let body = html! {
        h1 { "Traffic 流量防护" }
        p.muted {
            "Each collector learns every source's normal traffic per minute (source prefix, probe installation, path) "
            "and groups the minutes outside it into anomaly episodes; units in an episode are throttled against their own budget, "
            "and their trust drops. Verdicts from low-trust sources are marked in the lines and the reports. "
            "Each collector's answer is shown for up to " (state.config().traffic_max_age_s) " s before it is asked again."
        }
        @if views.is_empty() { (layout::Notice::info("No collector is configured.")) }
        @for (name, answer) in &views {
            h2 { "Collector " span.mono { (name) } }
            p.muted.age {
                "As read from the collector at " (state.time(answer.fetched_at_ms))
                " (" ((now - answer.fetched_at_ms).max(0) / 1000) " s ago)."
            }
            @match &answer.view {
                Ok(v) => (collector_view(&state, v)),
                Err(e) => (layout::Notice::error(e)),
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
