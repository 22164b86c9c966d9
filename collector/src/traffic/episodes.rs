//! Anomaly episodes: a unit's anomalous minutes that belong together, so
//! that a flood is one event with a start, an end and totals, not one alarm
//! per minute.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::units::{Bucket, UnitKey, UnitKind};

/// One episode as the export API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Episode {
    /// Its number on this node (counts up from 1 at each start).
    pub id: u64,
    /// The unit's kind.
    pub kind: UnitKind,
    /// The unit (`203.0.113.0/24`, an install id, a path pattern).
    pub unit: String,
    /// The start of its first anomalous minute.
    pub started_at: DateTime<Utc>,
    /// The end of its last anomalous minute so far.
    pub last_anomalous_at: DateTime<Utc>,
    /// When it was closed (after `traffic.episode_gap_minutes` quiet
    /// minutes); absent while ongoing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// Still going on.
    pub ongoing: bool,
    /// The highest degree seen: how many scaled MADs above the unit's median
    /// its request count was.
    pub peak_degree: f64,
    /// The highest request count of one of its minutes.
    pub peak_requests_per_minute: u32,
    /// The unit's median requests per minute before the episode.
    pub baseline_per_minute: f64,
    /// Anomalous minutes so far.
    pub anomalous_minutes: u32,
    /// Requests during the episode (throttled ones included).
    pub requests: u64,
    /// Body bytes read during the episode.
    pub bytes: u64,
    /// Reports refused during the episode.
    pub rejects: u64,
    /// Requests answered 429 during the episode.
    pub throttled: u64,
}

/// Minutes since the epoch as a time.
pub(crate) fn minute_start(minute: u64) -> DateTime<Utc> {
    i64::try_from(minute.saturating_mul(60))
        .ok()
        .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Open and recently closed episodes.
#[derive(Debug)]
pub(crate) struct EpisodeLog {
    open: HashMap<u64, OpenEpisode>,
    closed: VecDeque<Episode>,
    kept: usize,
    next_id: u64,
}

#[derive(Debug)]
struct OpenEpisode {
    view: Episode,
    /// The last anomalous minute (closed or current).
    last_minute: u64,
}

impl EpisodeLog {
    /// A log that keeps `kept` closed episodes.
    pub(crate) fn new(kept: usize) -> Self {
        Self {
            open: HashMap::new(),
            closed: VecDeque::new(),
            kept: kept.max(1),
            next_id: 1,
        }
    }

    /// Opens an episode of `unit` at `minute` with the minute's counts so far.
    pub(crate) fn open(
        &mut self,
        unit: &UnitKey,
        minute: u64,
        current: &Bucket,
        baseline: f64,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let view = Episode {
            id,
            kind: unit.kind(),
            unit: unit.name(),
            started_at: minute_start(minute),
            last_anomalous_at: minute_start(minute + 1),
            ended_at: None,
            ongoing: true,
            peak_degree: 0.0,
            peak_requests_per_minute: current.requests,
            baseline_per_minute: baseline,
            anomalous_minutes: 1,
            requests: u64::from(current.requests),
            bytes: current.bytes,
            rejects: u64::from(current.rejects),
            throttled: u64::from(current.throttled),
        };
        self.open.insert(
            id,
            OpenEpisode {
                view,
                last_minute: minute,
            },
        );
        id
    }

    /// Marks `minute` anomalous in episode `id` (a later minute joining it).
    pub(crate) fn extend(&mut self, id: u64, minute: u64) {
        if let Some(e) = self.open.get_mut(&id)
            && minute > e.last_minute
        {
            e.last_minute = minute;
            e.view.anomalous_minutes = e.view.anomalous_minutes.saturating_add(1);
            e.view.last_anomalous_at = minute_start(minute + 1);
        }
    }

    /// Adds one request's figures to episode `id`.
    pub(crate) fn add(&mut self, id: u64, requests: u64, bytes: u64, rejects: u64, throttled: u64) {
        if let Some(e) = self.open.get_mut(&id) {
            let v = &mut e.view;
            v.requests = v.requests.saturating_add(requests);
            v.bytes = v.bytes.saturating_add(bytes);
            v.rejects = v.rejects.saturating_add(rejects);
            v.throttled = v.throttled.saturating_add(throttled);
        }
    }

    /// Takes a minute's figures back out of episode `id` (the minute moves
    /// to an episode of its own).
    pub(crate) fn retract(&mut self, id: u64, minute: &Bucket) {
        if let Some(e) = self.open.get_mut(&id) {
            let v = &mut e.view;
            v.requests = v.requests.saturating_sub(u64::from(minute.requests));
            v.bytes = v.bytes.saturating_sub(minute.bytes);
            v.rejects = v.rejects.saturating_sub(u64::from(minute.rejects));
            v.throttled = v.throttled.saturating_sub(u64::from(minute.throttled));
            v.anomalous_minutes = v.anomalous_minutes.saturating_sub(1).max(1);
            if e.last_minute == minute.minute {
                e.last_minute = minute.minute.saturating_sub(1);
                v.last_anomalous_at = minute_start(minute.minute);
            }
        }
    }

    /// Records a minute's count and degree as candidates for the peaks.
    pub(crate) fn observe(&mut self, id: u64, requests: u32, degree: f64) {
        if let Some(e) = self.open.get_mut(&id) {
            e.view.peak_requests_per_minute = e.view.peak_requests_per_minute.max(requests);
            if degree > e.view.peak_degree {
                e.view.peak_degree = degree;
            }
        }
    }

    /// The last anomalous minute of episode `id`.
    pub(crate) fn last_minute(&self, id: u64) -> Option<u64> {
        self.open.get(&id).map(|e| e.last_minute)
    }

    /// Closes episode `id` at `now_minute`.
    pub(crate) fn close(&mut self, id: u64, now_minute: u64) {
        if let Some(mut e) = self.open.remove(&id) {
            e.view.ongoing = false;
            e.view.ended_at = Some(minute_start(now_minute.max(e.last_minute + 1)));
            if self.closed.len() >= self.kept {
                self.closed.pop_front();
            }
            self.closed.push_back(e.view);
        }
    }

    /// Episodes open now.
    pub(crate) fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Ongoing episodes (newest first), then closed ones (most recently
    /// closed first) unless `ongoing_only`, at most `limit`.
    pub(crate) fn list(&self, ongoing_only: bool, limit: usize) -> Vec<Episode> {
        let mut open: Vec<Episode> = self.open.values().map(|e| e.view.clone()).collect();
        open.sort_by_key(|e| std::cmp::Reverse(e.id));
        let closed = self.closed.iter().rev().cloned();
        if ongoing_only {
            open.into_iter().take(limit).collect()
        } else {
            open.into_iter().chain(closed).take(limit).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_episode_opens_grows_and_closes_into_the_bounded_log() {
        let mut log = EpisodeLog::new(2);
        let unit = UnitKey::Install("tid".to_owned());
        let bucket = Bucket {
            minute: 10,
            requests: 50,
            bytes: 5_000,
            ..Bucket::default()
        };
        let id = log.open(&unit, 10, &bucket, 1.0);
        log.add(id, 1, 100, 0, 1);
        log.observe(id, 51, 12.5);
        log.extend(id, 11);
        log.extend(id, 11);
        log.observe(id, 40, 3.0);
        let listed = log.list(true, 10);
        assert_eq!(listed.len(), 1);
        let e = &listed[0];
        assert!(e.ongoing && e.ended_at.is_none());
        assert_eq!((e.requests, e.bytes, e.throttled), (51, 5_100, 1));
        assert_eq!(e.anomalous_minutes, 2);
        assert_eq!(e.peak_requests_per_minute, 51);
        assert!((e.peak_degree - 12.5).abs() < 1e-9);
        assert_eq!(e.started_at, minute_start(10));
        assert_eq!(e.last_anomalous_at, minute_start(12));

        log.close(id, 14);
        assert_eq!(log.open_count(), 0);
        assert!(log.list(true, 10).is_empty());
        let all = log.list(false, 10);
        assert_eq!(all[0].ended_at, Some(minute_start(14)));
        assert!(!all[0].ongoing);
        // Only `kept` closed episodes stay.
        for m in [20, 30] {
            let id = log.open(&unit, m, &bucket, 0.0);
            log.close(id, m + 2);
        }
        let ids: Vec<u64> = log.list(false, 10).iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![3, 2]);
    }
}
