//! The export API's view of traffic defences: anomaly episodes and
//! low-trust units, for the back office. Mounted on the export listener
//! behind the export token (see `export_router`).

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Episode, LowTrustUnit, Traffic};

/// Most items one listing returns.
const MAX_LIMIT: usize = 1_000;

/// The routes, without authentication: `export_router` puts them behind
/// the token.
pub fn traffic_routes(traffic: Arc<Traffic>) -> Router {
    Router::new()
        .route("/export/traffic/episodes", get(list_episodes))
        .route("/export/traffic/low-trust", get(list_low_trust))
        .with_state(traffic)
}

/// The query of `GET /export/traffic/episodes`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EpisodeQuery {
    /// Only episodes still going on (default: ongoing ones first, then the
    /// most recently closed).
    #[serde(default)]
    ongoing: bool,
    /// Most episodes to return, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// The query of `GET /export/traffic/low-trust`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LowTrustQuery {
    /// Most units to return, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Anomaly episodes.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EpisodeList {
    /// Episodes open now.
    open: usize,
    /// Episodes opened since the collector started.
    opened_since_start: u64,
    /// Ongoing episodes newest first, then closed ones most recently closed
    /// first.
    episodes: Vec<Episode>,
}

/// Low-trust units.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LowTrustList {
    /// Units scoring below `trust.low_threshold`, lowest first.
    units: Vec<LowTrustUnit>,
}

fn bad_query(detail: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({"error": "bad_query", "detail": detail})),
    )
        .into_response()
}

fn limit_of(limit: Option<usize>) -> Result<usize, String> {
    match limit {
        None => Ok(100),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(format!("limit {n} is out of range: use 1 to {MAX_LIMIT}")),
    }
}

/// Recent and ongoing traffic anomaly episodes.
#[utoipa::path(
    get,
    path = "/export/traffic/episodes",
    tag = "traffic",
    params(EpisodeQuery),
    responses(
        (status = 200, description = "Anomaly episodes: a unit's (source prefix, install id \
                                      or path pattern) adjacent anomalous minutes grouped \
                                      into one event", body = EpisodeList),
        (status = 400, description = "The query is not `ongoing=BOOL&limit=N`"),
        (status = 401, description = "Missing or wrong bearer token, or the API is disabled"),
    )
)]
pub(crate) async fn list_episodes(
    State(traffic): State<Arc<Traffic>>,
    query: Result<Query<EpisodeQuery>, QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return bad_query(&format!("{}; use ?ongoing=true&limit=N", e.body_text()));
        }
    };
    let limit = match limit_of(query.limit) {
        Ok(l) => l,
        Err(detail) => return bad_query(&detail),
    };
    let episodes = traffic.episodes(query.ongoing, limit);
    let open = traffic.episodes(true, usize::MAX).len();
    axum::Json(EpisodeList {
        open,
        opened_since_start: traffic.episodes_opened(),
        episodes,
    })
    .into_response()
}

/// Install ids and source prefixes whose trust is low now.
#[utoipa::path(
    get,
    path = "/export/traffic/low-trust",
    tag = "traffic",
    params(LowTrustQuery),
    responses(
        (status = 200, description = "Units scoring below `trust.low_threshold`",
         body = LowTrustList),
        (status = 400, description = "The query is not `limit=N`"),
        (status = 401, description = "Missing or wrong bearer token, or the API is disabled"),
    )
)]
pub(crate) async fn list_low_trust(
    State(traffic): State<Arc<Traffic>>,
    query: Result<Query<LowTrustQuery>, QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(&format!("{}; use ?limit=N", e.body_text())),
    };
    let limit = match limit_of(query.limit) {
        Ok(l) => l,
        Err(detail) => return bad_query(&detail),
    };
    axum::Json(LowTrustList {
        units: traffic.low_trust(limit),
    })
    .into_response()
}
