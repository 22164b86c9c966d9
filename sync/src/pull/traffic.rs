//! What a collector says about its traffic defences: anomaly episodes and
//! the sources it trusts little now (`GET /export/traffic/…`), for the back
//! office. Read-only and outbound, like every other call to a collector.

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::client::CollectorClient;
use crate::Error;

/// Most bytes one traffic listing may take: a collector is outside the
/// internal network, so nothing it sends is read without a bound.
const MAX_TRAFFIC_BODY: usize = 2 * 1024 * 1024;

/// One anomaly episode: a unit's adjacent anomalous minutes as one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficEpisode {
    /// Its number on the collector node.
    pub id: u64,
    /// `prefix`, `install` or `path`.
    pub kind: String,
    /// The unit: `203.0.113.0/24`, an install id, a path pattern.
    pub unit: String,
    /// Start of its first anomalous minute.
    pub started_at: DateTime<Utc>,
    /// End of its last anomalous minute so far.
    pub last_anomalous_at: DateTime<Utc>,
    /// When it closed; absent while ongoing.
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
    /// Still going on.
    pub ongoing: bool,
    /// The highest degree: scaled MADs above the unit's median.
    pub peak_degree: f64,
    /// The busiest minute's requests.
    pub peak_requests_per_minute: u32,
    /// The unit's median requests per minute before the episode.
    pub baseline_per_minute: f64,
    /// Requests during the episode.
    pub requests: u64,
    /// Requests answered 429.
    pub throttled: u64,
    /// Reports refused.
    pub rejects: u64,
}

/// A source the collector trusts little now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LowTrustSource {
    /// `prefix` or `install`.
    pub kind: String,
    /// The unit.
    pub unit: String,
    /// Its score, 0–100.
    pub score: u8,
    /// Reports accepted from it.
    pub accepted: u64,
    /// Reports refused from it.
    pub rejects: u64,
    /// Anomaly episodes it had.
    pub anomalies: u64,
    /// Last seen.
    pub last_seen_at: DateTime<Utc>,
    /// In an anomaly episode now.
    pub in_episode: bool,
}

/// A collector's traffic view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrafficView {
    /// Episodes open now.
    pub open: usize,
    /// Episodes opened since the collector started.
    pub opened_since_start: u64,
    /// Ongoing episodes first, then the most recently closed.
    pub episodes: Vec<TrafficEpisode>,
    /// Low-trust sources, lowest first.
    pub low_trust: Vec<LowTrustSource>,
}

#[derive(Deserialize)]
struct EpisodeList {
    open: usize,
    opened_since_start: u64,
    episodes: Vec<TrafficEpisode>,
}

#[derive(Deserialize)]
struct LowTrustList {
    units: Vec<LowTrustSource>,
}

impl CollectorClient {
    /// The collector's anomaly episodes and low-trust sources, at most
    /// `limit` of each.
    pub async fn traffic(&self, limit: usize) -> Result<TrafficView, Error> {
        let limit = limit.clamp(1, 1000).to_string();
        let episodes: EpisodeList = self
            .get_json(&["export", "traffic", "episodes"], &[("limit", &limit)])
            .await?;
        let low: LowTrustList = self
            .get_json(&["export", "traffic", "low-trust"], &[("limit", &limit)])
            .await?;
        Ok(TrafficView {
            open: episodes.open,
            opened_since_start: episodes.opened_since_start,
            episodes: episodes.episodes,
            low_trust: low.units,
        })
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<T, Error> {
        let what = format!("GET /{}", segments.join("/"));
        let mut url = self.url(segments);
        url.query_pairs_mut().extend_pairs(query);
        let mut response = self
            .http
            .get(url)
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| self.error(self.transport_error(&what, &e)))?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(self.error(format!(
                "{what} answered 404: the collector predates traffic defences; upgrade it"
            )));
        }
        if response.status() != StatusCode::OK {
            let message = self.status_error(&what, response).await;
            return Err(self.error(message));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.error(self.transport_error(&what, &e)))?
        {
            if body.len() + chunk.len() > MAX_TRAFFIC_BODY {
                return Err(self.error(format!(
                    "{what} answered more than {MAX_TRAFFIC_BODY} bytes; refused"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body)
            .map_err(|e| self.error(format!("{what} answered JSON this build cannot read: {e}")))
    }
}
