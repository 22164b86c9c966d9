//! Trust scores of install ids and source prefixes.
//!
//! Anomalies and rejected reports lower a score at once; clean minutes raise
//! it slowly (at most once a minute, so a flood of valid reports cannot buy
//! trust quickly). New units start at a configured moderate score. Scores
//! live in memory and are written to the staging database in the
//! background, so that a restart keeps them.

use std::collections::{HashMap, HashSet};

use lineprobe_shared::{ArrivalTrust, SignatureCheck, TrustReason, TrustScore};
use serde::Serialize;
use utoipa::ToSchema;

use super::band::BandMemory;
use super::config::TrustConfig;
use super::episodes::minute_start;
use super::units::{UnitKey, UnitKind};

/// One unit's score and history.
#[derive(Debug, Clone, PartialEq)]
pub struct TrustEntry {
    /// 0–100.
    pub score: f64,
    /// Reports accepted from it.
    pub accepted: u64,
    /// Reports rejected from it.
    pub rejects: u64,
    /// Anomaly episodes it had.
    pub anomalies: u64,
    /// The last minute it was seen.
    pub last_seen_minute: u64,
    /// The last minute it had a rejected report.
    pub last_reject_minute: Option<u64>,
    /// The last minute its score was raised.
    last_raise_minute: Option<u64>,
}

/// A stored score (one row of `trust_scores`).
#[derive(Debug, Clone, PartialEq)]
pub struct TrustRow {
    /// The unit.
    pub unit: UnitKey,
    /// Its score and history.
    pub entry: TrustEntry,
    /// The unit's band to remember across a restart, if it has one; a row
    /// written without one keeps the band stored before.
    pub band: Option<BandMemory>,
}

impl TrustRow {
    /// A row as read back from the store.
    pub fn new(
        unit: UnitKey,
        score: f64,
        accepted: u64,
        rejects: u64,
        anomalies: u64,
        last_seen_minute: u64,
        last_reject_minute: Option<u64>,
    ) -> Self {
        Self {
            unit,
            entry: TrustEntry {
                score: score.clamp(0.0, 100.0),
                accepted,
                rejects,
                anomalies,
                last_seen_minute,
                last_reject_minute,
                last_raise_minute: None,
            },
            band: None,
        }
    }

    /// The row with the unit's band to remember.
    #[must_use]
    pub fn with_band(mut self, band: BandMemory) -> Self {
        self.band = Some(band);
        self
    }
}

/// Which scores are kept when there are more units than `max_units`: the
/// book in memory and the stored rows forget the same ones, so that a
/// restart does not bring back what the other forgot.
///
/// A unit's score is kept for as long after it was last seen as its
/// distance from the initial score buys (an hour a point):
/// ordered by last-seen time alone, a penalised prefix that went quiet (or
/// that a spray of fresh prefixes or install ids pushed out) came back at
/// the initial score, its penalty forgotten, and an honest unit's earned
/// trust was as cheap to wipe. A score still cannot be kept for ever, or
/// stale entries would fill the book and new units could never build trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustRetention {
    /// Most units kept (`trust.max_units`).
    pub max_units: usize,
    /// The score of a new unit (`trust.initial`).
    pub initial: u8,
}

/// Minutes of keeping a point of distance from the initial score buys (a
/// unit penalised down to 10 from 50 is kept 40 hours longer).
const MINUTES_PER_POINT: f64 = 60.0;

impl TrustRetention {
    /// The order in which scores are forgotten, lowest first: the minute
    /// last seen, plus the keeping the score's distance from the initial
    /// one buys. The staging store writes it with each row and prunes and
    /// restores rows in its order.
    pub fn keep_until(&self, last_seen_minute: u64, score: f64) -> u64 {
        let distance = (score.clamp(0.0, 100.0) - f64::from(self.initial)).abs();
        // 0..=100 points times 60: far inside u64 (the cast truncates, as
        // the staging store's migration of older rows does).
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let bought = (distance * MINUTES_PER_POINT) as u64;
        last_seen_minute.saturating_add(bought)
    }
}

/// A low-trust unit as the export API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LowTrustUnit {
    /// The unit's kind (`prefix` or `install`).
    pub kind: UnitKind,
    /// The unit.
    pub unit: String,
    /// Its current score, 0–100.
    pub score: u8,
    /// Reports accepted from it.
    pub accepted: u64,
    /// Reports rejected from it.
    pub rejects: u64,
    /// Anomaly episodes it had.
    pub anomalies: u64,
    /// When it was last seen.
    pub last_seen_at: chrono::DateTime<chrono::Utc>,
    /// In an anomaly episode now.
    pub in_episode: bool,
}

/// Every scored unit.
#[derive(Debug)]
pub(crate) struct TrustBook {
    config: TrustConfig,
    entries: HashMap<UnitKey, TrustEntry>,
    dirty: HashSet<UnitKey>,
}

/// What is known of a report's units when its trust is computed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct UnitFlags {
    /// The prefix, install or path unit is in an anomaly episode.
    pub(crate) in_episode: bool,
}

impl TrustBook {
    /// An empty book.
    pub(crate) fn new(config: TrustConfig) -> Self {
        Self {
            config,
            entries: HashMap::new(),
            dirty: HashSet::new(),
        }
    }

    /// Restores stored scores (at most `max_units`, those kept longest
    /// first; see [`TrustRetention`]).
    pub(crate) fn load(&mut self, rows: Vec<TrustRow>) {
        for row in rows {
            if self.entries.len() >= self.config.max_units {
                break;
            }
            self.entries.insert(row.unit, row.entry);
        }
    }

    fn entry(&mut self, unit: &UnitKey, minute: u64) -> &mut TrustEntry {
        if !self.entries.contains_key(unit) {
            self.evict_if_full();
        }
        let initial = f64::from(self.config.initial);
        self.dirty.insert(unit.clone());
        let e = self
            .entries
            .entry(unit.clone())
            .or_insert_with(|| TrustEntry {
                score: initial,
                accepted: 0,
                rejects: 0,
                anomalies: 0,
                last_seen_minute: minute,
                last_reject_minute: None,
                last_raise_minute: None,
            });
        e.last_seen_minute = e.last_seen_minute.max(minute);
        e
    }

    /// Forgets the tenth of the book kept shortest ([`TrustRetention`])
    /// when it is full. Their stored rows are pruned the same way by the
    /// store.
    fn evict_if_full(&mut self) {
        if self.entries.len() < self.config.max_units {
            return;
        }
        let retention = self.retention();
        let keep = |e: &TrustEntry| retention.keep_until(e.last_seen_minute, e.score);
        let mut seen: Vec<u64> = self.entries.values().map(keep).collect();
        if seen.is_empty() {
            return;
        }
        let n = (seen.len() / 10).max(1);
        let (_, cut, _) = seen.select_nth_unstable(n - 1);
        let cut = *cut;
        let mut budget = n;
        // A forgotten unit leaves the rows to write too: the set of changed
        // units would otherwise keep every unit a spray of prefixes or
        // install ids named until the next write (or, while writes fail,
        // for ever), however small the book.
        let dirty = &mut self.dirty;
        self.entries.retain(|unit, e| {
            if budget > 0 && keep(e) <= cut {
                budget -= 1;
                dirty.remove(unit);
                false
            } else {
                true
            }
        });
    }

    /// The score of `unit` (the initial score when unknown).
    pub(crate) fn score(&self, unit: &UnitKey) -> f64 {
        self.entries
            .get(unit)
            .map_or(f64::from(self.config.initial), |e| e.score)
    }

    /// An accepted report from `unit` in `minute`; clean unless the unit is
    /// in an anomaly episode.
    pub(crate) fn accepted(&mut self, unit: &UnitKey, minute: u64, in_episode: bool) {
        let raise = self.config.raise_per_clean_minute;
        let e = self.entry(unit, minute);
        e.accepted = e.accepted.saturating_add(1);
        if !in_episode && e.last_raise_minute != Some(minute) {
            e.last_raise_minute = Some(minute);
            e.score = (e.score + raise).min(100.0);
        }
    }

    /// A rejected report from `unit`.
    pub(crate) fn rejected(&mut self, unit: &UnitKey, minute: u64) {
        let penalty = self.config.reject_penalty;
        let e = self.entry(unit, minute);
        e.rejects = e.rejects.saturating_add(1);
        e.last_reject_minute = Some(minute);
        e.score = (e.score - penalty).max(0.0);
    }

    /// An anomaly episode of `unit` opened.
    pub(crate) fn episode_opened(&mut self, unit: &UnitKey, minute: u64) {
        let penalty = self.config.anomaly_penalty;
        let e = self.entry(unit, minute);
        e.anomalies = e.anomalies.saturating_add(1);
        e.score = (e.score - penalty).max(0.0);
    }

    /// A further anomalous minute of an open episode of `unit`.
    pub(crate) fn anomalous_minute(&mut self, unit: &UnitKey, minute: u64) {
        let penalty = self.config.anomaly_minute_penalty;
        let e = self.entry(unit, minute);
        e.score = (e.score - penalty).max(0.0);
    }

    /// The trust of a report from `prefix` and `install` (when known), as
    /// it arrives, before this report changes any score.
    pub(crate) fn arrival(
        &self,
        prefix: &UnitKey,
        install: Option<&UnitKey>,
        flags: UnitFlags,
        signature: SignatureCheck,
        minute: u64,
    ) -> ArrivalTrust {
        let prefix_score = self.score(prefix);
        let install_score = install.map_or(prefix_score, |u| self.score(u));
        let mut score = prefix_score.min(install_score);
        let mut reasons = Vec::new();
        if flags.in_episode {
            reasons.push(TrustReason::AnomalyEpisode);
        }
        match signature {
            SignatureCheck::KeyChanged => {
                reasons.push(TrustReason::KeyChanged);
                score = score.min(f64::from(self.config.key_changed_cap));
            }
            SignatureCheck::Unsigned => {
                score = score.min(f64::from(self.config.unsigned_cap));
            }
            SignatureCheck::Verified => {}
        }
        let units = [Some(prefix), install];
        let recent = u64::from(self.config.recent_reject_minutes);
        if units.iter().flatten().any(|u| {
            self.entries
                .get(*u)
                .and_then(|e| e.last_reject_minute)
                .is_some_and(|m| minute.saturating_sub(m) < recent)
        }) {
            reasons.push(TrustReason::RecentRejects);
        }
        if signature == SignatureCheck::Unsigned {
            reasons.push(TrustReason::Unsigned);
        }
        let new_below = u64::from(self.config.new_source_reports);
        if units
            .iter()
            .flatten()
            .any(|u| self.entries.get(*u).is_none_or(|e| e.accepted < new_below))
        {
            reasons.push(TrustReason::NewSource);
        }
        ArrivalTrust {
            score: TrustScore::saturating(score),
            install: TrustScore::saturating(install_score),
            prefix: TrustScore::saturating(prefix_score),
            signature,
            reasons,
            key_id: None,
        }
    }

    /// Units below the low-trust threshold, lowest first, at most `limit`.
    pub(crate) fn low(&self, limit: usize) -> Vec<(UnitKey, TrustEntry)> {
        let threshold = f64::from(self.config.low_threshold);
        let mut low: Vec<(UnitKey, TrustEntry)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.score < threshold)
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        low.sort_by(|a, b| a.1.score.total_cmp(&b.1.score).then_with(|| a.0.cmp(&b.0)));
        low.truncate(limit);
        low
    }

    /// How many units of each kind are below the threshold.
    pub(crate) fn low_counts(&self) -> (usize, usize) {
        let threshold = f64::from(self.config.low_threshold);
        self.entries
            .iter()
            .filter(|(_, e)| e.score < threshold)
            .fold((0, 0), |(p, i), (k, _)| match k.kind() {
                UnitKind::Prefix => (p + 1, i),
                _ => (p, i + 1),
            })
    }

    /// The changed rows since the last call.
    pub(crate) fn take_dirty(&mut self) -> Vec<TrustRow> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter_map(|unit| {
                self.entries.get(&unit).map(|e| TrustRow {
                    unit,
                    entry: e.clone(),
                    band: None,
                })
            })
            .collect()
    }

    /// Puts rows whose write failed back, to be written next time.
    pub(crate) fn mark_dirty(&mut self, rows: &[TrustRow]) {
        // Units forgotten meanwhile have nothing left to write.
        for row in rows {
            if self.entries.contains_key(&row.unit) {
                self.dirty.insert(row.unit.clone());
            }
        }
    }

    /// Which scores are kept (`trust.max_units`, `trust.initial`).
    pub(crate) fn retention(&self) -> TrustRetention {
        TrustRetention {
            max_units: self.config.max_units,
            initial: self.config.initial,
        }
    }

    /// How many units are scored.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A low-trust unit for the API.
pub(crate) fn low_trust_view(unit: &UnitKey, entry: &TrustEntry, in_episode: bool) -> LowTrustUnit {
    LowTrustUnit {
        kind: unit.kind(),
        unit: unit.name(),
        score: TrustScore::saturating(entry.score).get(),
        accepted: entry.accepted,
        rejects: entry.rejects,
        anomalies: entry.anomalies,
        last_seen_at: minute_start(entry.last_seen_minute),
        in_episode,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> TrustBook {
        TrustBook::new(TrustConfig::default())
    }

    fn prefix() -> UnitKey {
        UnitKey::prefix_of("203.0.113.9".parse().unwrap())
    }

    fn install() -> UnitKey {
        UnitKey::Install("tid-1".to_owned())
    }

    #[test]
    fn a_new_unsigned_source_is_moderate_and_capped() {
        let b = book();
        let t = b.arrival(
            &prefix(),
            Some(&install()),
            UnitFlags::default(),
            SignatureCheck::Unsigned,
            0,
        );
        assert_eq!(t.score.get(), 50);
        assert_eq!((t.prefix.get(), t.install.get()), (50, 50));
        assert_eq!(
            t.reasons,
            vec![TrustReason::Unsigned, TrustReason::NewSource]
        );
    }

    #[test]
    fn clean_history_raises_slowly_and_at_most_once_a_minute() {
        let mut b = book();
        for _ in 0..100 {
            b.accepted(&install(), 7, false);
        }
        assert!(
            (b.score(&install()) - 51.0).abs() < 1e-9,
            "one raise in minute 7"
        );
        for minute in 8..100 {
            b.accepted(&install(), minute, false);
        }
        assert!((b.score(&install()) - 100.0).abs() < 1e-9, "capped at 100");
        // Unsigned reports stay capped, verified ones reach the full score.
        for _ in 0..10 {
            b.accepted(&prefix(), 200, false);
        }
        let verified = b.arrival(
            &prefix(),
            Some(&install()),
            UnitFlags::default(),
            SignatureCheck::Verified,
            200,
        );
        assert_eq!(verified.install.get(), 100);
        assert_eq!(verified.score.get(), 51, "the prefix is still young");
        let unsigned = b.arrival(
            &install(),
            None,
            UnitFlags::default(),
            SignatureCheck::Unsigned,
            200,
        );
        assert_eq!(unsigned.score.get(), 60);
        // Accepted reports inside an episode raise nothing.
        let before = b.score(&prefix());
        b.accepted(&prefix(), 201, true);
        assert!((b.score(&prefix()) - before).abs() < 1e-9);
    }

    #[test]
    fn rejects_and_anomalies_lower_the_score_and_are_named() {
        let mut b = book();
        b.rejected(&prefix(), 10);
        b.episode_opened(&prefix(), 10);
        b.anomalous_minute(&prefix(), 11);
        assert!((b.score(&prefix()) - 20.0).abs() < 1e-9);
        let t = b.arrival(
            &prefix(),
            Some(&install()),
            UnitFlags { in_episode: true },
            SignatureCheck::KeyChanged,
            12,
        );
        assert_eq!(t.score.get(), 20);
        assert_eq!(
            t.reasons,
            vec![
                TrustReason::AnomalyEpisode,
                TrustReason::KeyChanged,
                TrustReason::RecentRejects,
                TrustReason::NewSource
            ]
        );
        // The reject is no longer recent an hour later.
        let later = b.arrival(
            &prefix(),
            None,
            UnitFlags::default(),
            SignatureCheck::Verified,
            70,
        );
        assert!(!later.reasons.contains(&TrustReason::RecentRejects));
        let low = b.low(10);
        assert_eq!(low.len(), 1);
        assert_eq!(low[0].0, prefix());
        assert_eq!(b.low_counts(), (1, 0));
        // The score never goes below 0.
        for _ in 0..100 {
            b.rejected(&prefix(), 13);
        }
        assert!(b.score(&prefix()).abs() < 1e-9);
    }

    #[test]
    fn dirty_rows_are_handed_out_once_and_the_book_is_bounded() {
        let mut b = TrustBook::new(TrustConfig {
            max_units: 20,
            ..TrustConfig::default()
        });
        b.rejected(&prefix(), 1);
        let rows = b.take_dirty();
        assert_eq!(rows.len(), 1);
        assert!(b.take_dirty().is_empty());
        b.mark_dirty(&rows);
        assert_eq!(b.take_dirty().len(), 1);
        for i in 0..100_u64 {
            b.accepted(&UnitKey::Install(format!("t{i}")), i + 2, false);
        }
        assert!(b.len() <= 20, "{}", b.len());
        assert!(b.entries.contains_key(&UnitKey::Install("t99".to_owned())));
    }

    #[test]
    fn a_penalised_or_trusted_unit_outlasts_a_spray_of_fresh_ones() {
        let mut b = TrustBook::new(TrustConfig {
            max_units: 20,
            ..TrustConfig::default()
        });
        // A prefix caught in an episode (50 → 25), then quiet.
        b.episode_opened(&prefix(), 0);
        b.rejected(&prefix(), 0);
        // An installation that earned trust over half an hour (50 → 80).
        for minute in 0..30 {
            b.accepted(&install(), minute, false);
        }
        // Fresh units, each seen once, over the next ten hours: each is
        // newer than both, and worth forgetting before either.
        for i in 0..200_u64 {
            b.accepted(&UnitKey::Install(format!("s{i}")), 30 + i * 3, false);
        }
        assert!(b.len() <= 20, "{}", b.len());
        assert!((b.score(&prefix()) - 25.0).abs() < 1e-9);
        assert!((b.score(&install()) - 80.0).abs() < 1e-9);
        // Kept as long as the distance buys, not for ever.
        for i in 200..1_000_u64 {
            b.accepted(&UnitKey::Install(format!("s{i}")), 30 + i * 3, false);
        }
        assert!((b.score(&prefix()) - 50.0).abs() < 1e-9);
        assert!((b.score(&install()) - 50.0).abs() < 1e-9);
    }

    #[test]
    fn keep_until_adds_an_hour_per_point_from_the_initial_score() {
        let r = TrustRetention {
            max_units: 1,
            initial: 50,
        };
        assert_eq!(r.keep_until(100, 50.0), 100);
        assert_eq!(r.keep_until(100, 25.0), 100 + 25 * 60);
        assert_eq!(r.keep_until(100, 80.5), 100 + 1830);
        assert_eq!(r.keep_until(100, -5.0), 100 + 50 * 60);
        assert_eq!(r.keep_until(u64::MAX, 0.0), u64::MAX);
    }

    #[test]
    fn forgotten_units_leave_the_rows_to_write() {
        let mut b = TrustBook::new(TrustConfig {
            max_units: 20,
            ..TrustConfig::default()
        });
        // A spray between two writes: only units still in the book are
        // remembered as changed.
        for i in 0..1_000_u64 {
            b.rejected(&UnitKey::Install(format!("t{i}")), i);
        }
        assert!(b.dirty.len() <= 20, "{}", b.dirty.len());
        // A failed write puts back only the rows of units still kept.
        let rows = b.take_dirty();
        for i in 1_000..1_100_u64 {
            b.rejected(&UnitKey::Install(format!("t{i}")), i);
        }
        b.mark_dirty(&rows);
        assert!(b.dirty.len() <= 20, "{}", b.dirty.len());
    }
}
