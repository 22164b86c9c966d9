//! How the internal side reads a report's trust at arrival.
//!
//! The collector scores each report's sources (its installation, its source
//! prefix, its signature) and writes the scores into the envelope. Here a
//! policy turns them into one mark: a verdict from a low-trust source is
//! kept, listed and counted like any other, but marked, so the compliance
//! team sees it apart and does not act on it alone.
//!
//! One thing only this side can see: each receiver node enrols probe keys
//! on its own, so someone who enrols a key of their own for a victim's
//! `install_id` at a node the victim never used is "verified" there. The
//! envelope names the key that verified each report, the store keeps when
//! each key of an installation was first and last seen on any node
//! ([`KeySpan`]), and [`key_contest`] marks the installation's reports
//! around a change of key the way a receiver marks a change it saw itself;
//! while the older key goes on signing after the newer appeared (which a
//! rotation never does, and a clone does) the mark lasts.

use lineprobe_shared::{ArrivalTrust, SignatureCheck, TrustReason};
use serde::Serialize;

/// When a report's trust at arrival counts as low.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustPolicy {
    /// Scores below this are low (0–100; 0 marks nothing by score).
    pub low_below: u8,
    /// A probe whose key changed is low-trust whatever its score: the
    /// install id may have been taken over.
    pub key_changed_is_low: bool,
    /// How long an installation's reports stay marked after another of
    /// its keys was last seen signing (see [`key_contest`]), in days.
    pub key_change_flag_days: u32,
}

impl Default for TrustPolicy {
    fn default() -> Self {
        Self {
            low_below: 50,
            key_changed_is_low: true,
            // The receiver's own default for a change it sees itself.
            key_change_flag_days: 30,
        }
    }
}

/// When one key of an installation was seen signing its reports, on any
/// receiver node (times of arrival, Unix ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct KeySpan {
    /// The installation.
    pub install_id: String,
    /// The key's id (16 hex digits).
    pub key_id: String,
    /// The earliest report it signed.
    pub first_seen_ms: i64,
    /// The latest report it signed (the store keeps this to within
    /// [`KEY_SEEN_RESOLUTION_MS`]).
    pub last_seen_ms: i64,
    /// The node that received the earliest one.
    pub first_node: String,
}

/// How stale a stored [`KeySpan::last_seen_ms`] may be: a sighting less
/// than this after the stored time is not written (every report would
/// otherwise rewrite its key's row), which moves the end of a mark by at
/// most this much.
pub const KEY_SEEN_RESOLUTION_MS: i64 = 3_600_000;

/// Another key of a report's installation, near enough in time to the
/// report to put the installation in doubt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyContest {
    /// The other key's id.
    pub other_key_id: String,
    /// When the other key was first seen (Unix ms).
    pub other_first_seen_ms: i64,
    /// When the other key was last seen (Unix ms).
    pub other_last_seen_ms: i64,
    /// The node that first received a report signed by the other key.
    pub other_first_node: String,
    /// Whether the older of the two keys signed again after the newer
    /// one appeared: two parties at once, not a change of key.
    pub at_once: bool,
}

/// Whether a report signed by `key_id` that arrived at `at_ms` falls in a
/// key contest of its installation, whose keys were seen as `spans` (the
/// report's own sighting included): another key `o` whose change with
/// this one — the newer's first sighting `n` — lies at or before the
/// report, and the report before `max(e, n) + period`, where `e` is the
/// earlier of the two keys' last sightings.
///
/// A change of key (a reinstalled probe, or a rotation) marks both keys'
/// reports for `period` after it, as a receiver marks a change it saw
/// itself; while both keys go on signing (the older after the newer
/// appeared), the mark lasts until `period` after one of them stops — so
/// a key that signed once does not mark the line for good. Reports from
/// before the newer key appeared are not marked. When several keys
/// qualify, the one seen last is named. Reports pulled later from another
/// node can show a contest that verdicts already made did not see: the
/// pipeline judges those again ([`contest_changes`]).
pub fn key_contest(
    spans: &[KeySpan],
    key_id: &str,
    at_ms: i64,
    period_ms: i64,
) -> Option<KeyContest> {
    let own = spans.iter().find(|s| s.key_id == key_id)?;
    spans
        .iter()
        .filter(|o| o.key_id != key_id)
        .filter_map(|o| {
            let window = ContestWindow::of(own, o, period_ms);
            (window.start <= at_ms && at_ms < window.end).then(|| KeyContest {
                other_key_id: o.key_id.clone(),
                other_first_seen_ms: o.first_seen_ms,
                other_last_seen_ms: o.last_seen_ms,
                other_first_node: o.first_node.clone(),
                at_once: window.at_once,
            })
        })
        .max_by_key(|c| (c.other_last_seen_ms, c.other_key_id.clone()))
}

/// When two keys of an installation mark its reports (see [`key_contest`]).
struct ContestWindow {
    /// The newer key's first sighting.
    start: i64,
    /// A period after the first of the two stopped signing (or after
    /// `start`, when that was before it).
    end: i64,
    /// Whether the older key signed again after the newer one appeared.
    at_once: bool,
}

impl ContestWindow {
    fn of(a: &KeySpan, b: &KeySpan, period_ms: i64) -> Self {
        let (older, newer) =
            if (b.first_seen_ms, b.key_id.as_str()) < (a.first_seen_ms, a.key_id.as_str()) {
                (b, a)
            } else {
                (a, b)
            };
        let start = newer.first_seen_ms;
        // Both keys signed until the first of them stopped: a key that
        // signed once and no more ends the overlap with its last report.
        let overlap_end = older.last_seen_ms.min(newer.last_seen_ms);
        Self {
            start,
            end: overlap_end.max(start).saturating_add(period_ms),
            at_once: older.last_seen_ms > newer.first_seen_ms,
        }
    }
}

/// The arrival times, as ordered, disjoint `[from, to)` intervals, at which
/// an installation's reports may be judged differently with its keys seen
/// as `after` than as `before` (both the installation's spans): where
/// sightings that came in later — reports pulled late from another node —
/// opened, widened, moved or closed a [`key_contest`]. Reports judged
/// before that arrived in them are to be judged again. Empty when the
/// contests are the same.
pub fn contest_changes(before: &[KeySpan], after: &[KeySpan], period_ms: i64) -> Vec<(i64, i64)> {
    let a = contested(before, period_ms);
    let b = contested(after, period_ms);
    let mut points: Vec<i64> = a.iter().chain(&b).flat_map(|&(s, e)| [s, e]).collect();
    points.sort_unstable();
    points.dedup();
    let inside = |set: &[(i64, i64)], t: i64| set.iter().any(|&(s, e)| s <= t && t < e);
    let mut out: Vec<(i64, i64)> = Vec::new();
    for pair in points.windows(2) {
        let (from, to) = (pair[0], pair[1]);
        if inside(&a, from) == inside(&b, from) {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.1 == from => last.1 = to,
            _ => out.push((from, to)),
        }
    }
    out
}

/// The union of the windows of every two of `spans`, merged and in order.
fn contested(spans: &[KeySpan], period_ms: i64) -> Vec<(i64, i64)> {
    let mut windows: Vec<(i64, i64)> = spans
        .iter()
        .enumerate()
        .flat_map(|(i, a)| {
            spans[i + 1..].iter().map(move |b| {
                let w = ContestWindow::of(a, b, period_ms);
                (w.start, w.end)
            })
        })
        .collect();
    windows.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(windows.len());
    for (s, e) in windows {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

/// The mark a verdict carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrustMark {
    /// The score at arrival; `None` when the receiver did not score (older
    /// collectors), which is never low.
    pub score: Option<u8>,
    /// Whether the source counts as low-trust.
    pub low: bool,
    /// The signature check at arrival.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureCheck>,
    /// The receiver's reasons for a score below full.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<TrustReason>,
    /// Why the mark is low, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_low: Option<String>,
    /// Another key of the installation near the report in time, which
    /// only this side sees (the receivers enrol keys each on its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_contest: Option<KeyContest>,
}

impl TrustMark {
    /// The mark of a report that arrived without trust scores.
    pub const UNSCORED: Self = Self {
        score: None,
        low: false,
        signature: None,
        reasons: Vec::new(),
        why_low: None,
        key_contest: None,
    };
}

impl TrustPolicy {
    /// How long a key contest marks reports (see [`key_contest`]), in ms.
    pub fn key_change_flag_ms(&self) -> i64 {
        i64::from(self.key_change_flag_days) * 86_400_000
    }

    /// The mark of a report with this trust at arrival, and the key
    /// contest its installation is in at the report's time, if any.
    pub fn mark(&self, trust: Option<&ArrivalTrust>, contest: Option<&KeyContest>) -> TrustMark {
        let Some(trust) = trust else {
            return TrustMark::UNSCORED;
        };
        let score = trust.score.get();
        let why_low = if score < self.low_below {
            let reasons: Vec<&str> = trust.reasons.iter().map(|r| r.as_str()).collect();
            Some(if reasons.is_empty() {
                format!("trust score {score} at arrival is below {}", self.low_below)
            } else {
                format!(
                    "trust score {score} at arrival is below {} ({})",
                    self.low_below,
                    reasons.join(", ")
                )
            })
        } else if self.key_changed_is_low && trust.signature == SignatureCheck::KeyChanged {
            Some("the probe's signing key changed".to_owned())
        } else if self.key_changed_is_low
            && let Some(c) = contest
        {
            let first = chrono::DateTime::from_timestamp_millis(c.other_first_seen_ms)
                .map_or_else(String::new, |t| t.format(" on %Y-%m-%d").to_string());
            Some(if c.at_once {
                format!(
                    "another key ({}, first seen at node {}{first}) signs this installation's \
                     reports at the same time: its install_id may have been cloned",
                    c.other_key_id, c.other_first_node
                )
            } else {
                format!(
                    "the installation's signing key changed (the other key {}, first seen at \
                     node {}{first})",
                    c.other_key_id, c.other_first_node
                )
            })
        } else {
            None
        };
        TrustMark {
            score: Some(score),
            low: why_low.is_some(),
            signature: Some(trust.signature),
            reasons: trust.reasons.clone(),
            why_low,
            key_contest: contest.cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use lineprobe_shared::TrustScore;

    use super::*;

    fn trust(score: u8, signature: SignatureCheck, reasons: Vec<TrustReason>) -> ArrivalTrust {
        let s = TrustScore::new(score).unwrap();
        ArrivalTrust {
            score: s,
            install: s,
            prefix: s,
            signature,
            reasons,
            key_id: None,
        }
    }

    #[test]
    fn unscored_reports_are_not_low() {
        assert_eq!(TrustPolicy::default().mark(None, None), TrustMark::UNSCORED);
    }

    #[test]
    fn a_score_below_the_threshold_is_low_with_the_receivers_reasons() {
        let policy = TrustPolicy::default();
        let mark = policy.mark(
            Some(&trust(
                20,
                SignatureCheck::Unsigned,
                vec![TrustReason::AnomalyEpisode, TrustReason::Unsigned],
            )),
            None,
        );
        assert!(mark.low);
        assert_eq!(mark.score, Some(20));
        assert_eq!(
            mark.why_low.as_deref(),
            Some("trust score 20 at arrival is below 50 (anomaly_episode, unsigned)")
        );
        let fine = policy.mark(Some(&trust(50, SignatureCheck::Verified, Vec::new())), None);
        assert!(!fine.low, "{fine:?}");
        assert_eq!(fine.why_low, None);
    }

    #[test]
    fn a_changed_key_is_low_unless_the_policy_says_otherwise() {
        let t = trust(
            90,
            SignatureCheck::KeyChanged,
            vec![TrustReason::KeyChanged],
        );
        assert!(TrustPolicy::default().mark(Some(&t), None).low);
        let lenient = TrustPolicy {
            key_changed_is_low: false,
            ..TrustPolicy::default()
        };
        assert!(!lenient.mark(Some(&t), None).low);
    }

    fn span(key: &str, first: i64, last: i64) -> KeySpan {
        KeySpan {
            install_id: "inst".to_owned(),
            key_id: key.to_owned(),
            first_seen_ms: first,
            last_seen_ms: last,
            first_node: format!("node-{key}"),
        }
    }

    const DAY: i64 = 86_400_000;
    const PERIOD: i64 = 30 * DAY;

    #[test]
    fn one_key_is_no_contest() {
        let spans = [span("a", 0, 100 * DAY)];
        assert_eq!(key_contest(&spans, "a", 50 * DAY, PERIOD), None);
        // A key the spans do not know is not judged here.
        assert_eq!(key_contest(&spans, "b", 50 * DAY, PERIOD), None);
    }

    #[test]
    fn a_change_of_key_marks_both_keys_for_the_period_after_it() {
        // Key a until day 10, key b from day 10 on: a rotation.
        let spans = [span("a", 0, 10 * DAY), span("b", 10 * DAY, 90 * DAY)];
        let at = |key, day: i64| key_contest(&spans, key, day * DAY, PERIOD);
        // Before the change nothing is marked, even when read later.
        assert_eq!(at("a", 5), None);
        let c = at("b", 11).expect("just after the change");
        assert_eq!(c.other_key_id, "a");
        assert_eq!(c.other_first_node, "node-a");
        assert!(!c.at_once, "{c:?}");
        assert!(at("a", 10).is_some(), "the old key's report at the change");
        assert!(at("b", 39).is_some());
        // A period after the change, the new key is simply the key.
        assert_eq!(at("b", 40), None);
        assert_eq!(at("b", 80), None);
    }

    #[test]
    fn two_keys_at_once_stay_marked_while_the_older_one_signs() {
        // Key a from day 0, someone enrols key b at another node on day
        // 20, and key a goes on signing until day 100.
        let spans = [span("a", 0, 100 * DAY), span("b", 20 * DAY, 100 * DAY)];
        let at = |key, day: i64| key_contest(&spans, key, day * DAY, PERIOD);
        assert_eq!(at("a", 19), None, "before the second key appeared");
        for day in [20, 60, 100, 129] {
            let c = at("a", day).expect("the older key during the contest");
            assert_eq!(c.other_key_id, "b");
            assert!(c.at_once);
            let c = at("b", day).expect("the newer key during the contest");
            assert_eq!(c.other_key_id, "a");
            assert!(c.at_once);
        }
        assert_eq!(at("b", 130), None);
    }

    #[test]
    fn a_key_that_signed_once_does_not_mark_the_line_for_good() {
        // Someone signs once with key b on day 20; the probe goes on with
        // key a. The mark ends a period after key b's only report.
        let spans = [span("a", 0, 100 * DAY), span("b", 20 * DAY, 20 * DAY)];
        let at = |key, day: i64| key_contest(&spans, key, day * DAY, PERIOD);
        let c = at("a", 25).expect("marked after the other key appeared");
        assert!(c.at_once, "{c:?}");
        assert!(at("a", 49).is_some());
        assert_eq!(at("a", 50), None);
        assert_eq!(at("a", 90), None);
    }

    #[test]
    fn the_other_key_named_is_the_one_seen_last() {
        let spans = [
            span("a", 0, 10 * DAY),
            span("b", 10 * DAY, 20 * DAY),
            span("c", 20 * DAY, 60 * DAY),
        ];
        // Key b on day 25 is within a period of both changes, a → b on
        // day 10 and b → c on day 20.
        let c = key_contest(&spans, "b", 25 * DAY, PERIOD).expect("marked");
        assert_eq!(c.other_key_id, "c", "{c:?}");
        // Key c at day 55: a change from b on day 20 is 35 days back.
        assert_eq!(key_contest(&spans, "c", 55 * DAY, PERIOD), None);
    }

    #[test]
    fn a_second_key_pulled_later_opens_a_contest_to_judge_again() {
        let before = [span("a", 0, 100 * DAY)];
        // Key b signed once on day 20, at a node pulled only now.
        let after = [span("a", 0, 100 * DAY), span("b", 20 * DAY, 20 * DAY)];
        assert_eq!(
            contest_changes(&before, &after, PERIOD),
            [(20 * DAY, 50 * DAY)]
        );
        // The other way round (the contest closes) is a change too, and
        // the same spans are none.
        assert_eq!(
            contest_changes(&after, &before, PERIOD),
            [(20 * DAY, 50 * DAY)]
        );
        assert_eq!(contest_changes(&after, &after, PERIOD), []);
        assert_eq!(contest_changes(&[], &before, PERIOD), []);
    }

    #[test]
    fn a_later_last_sighting_widens_a_contest_at_its_end() {
        let before = [span("a", 0, 100 * DAY), span("b", 20 * DAY, 60 * DAY)];
        let after = [span("a", 0, 100 * DAY), span("b", 20 * DAY, 100 * DAY)];
        assert_eq!(
            contest_changes(&before, &after, PERIOD),
            [(90 * DAY, 130 * DAY)]
        );
    }

    #[test]
    fn an_earlier_first_sighting_moves_a_contest_both_ways() {
        // a on day 10 only, b from day 20 to 30: a change on day 20,
        // marked until day 50.
        let before = [span("a", 10 * DAY, 10 * DAY), span("b", 20 * DAY, 30 * DAY)];
        // A report pulled later shows b already on day 5: b is the older
        // key, the change is a's appearance on day 10, marked until 40.
        let after = [span("a", 10 * DAY, 10 * DAY), span("b", 5 * DAY, 30 * DAY)];
        let changes = contest_changes(&before, &after, PERIOD);
        assert_eq!(changes, [(10 * DAY, 20 * DAY), (40 * DAY, 50 * DAY)]);
        // Every report the change concerns is in them: those judged
        // differently now, and no others.
        for day in 0..60 {
            let at = day * DAY;
            let differs = ["a", "b"].iter().any(|key| {
                key_contest(&before, key, at, PERIOD).is_some()
                    != key_contest(&after, key, at, PERIOD).is_some()
            });
            let listed = changes.iter().any(|&(s, e)| s <= at && at < e);
            assert_eq!(differs, listed, "day {day}");
        }
    }

    #[test]
    fn a_third_key_changes_only_where_its_own_contests_reach() {
        let before = [span("a", 0, 10 * DAY), span("b", 10 * DAY, 20 * DAY)];
        let mut after = before.to_vec();
        after.push(span("c", 30 * DAY, 31 * DAY));
        // a-b marks days 10 to 40 already; c's contests (from its first
        // report on day 30, to a period later: a and b stopped before it
        // came) add 40 to 60.
        assert_eq!(
            contest_changes(&before, &after, PERIOD),
            [(40 * DAY, 60 * DAY)]
        );
    }

    #[test]
    fn a_key_contest_makes_a_verified_report_low_and_says_why() {
        let t = trust(100, SignatureCheck::Verified, Vec::new());
        let contest = KeyContest {
            other_key_id: "65b60673d6ed884b".to_owned(),
            other_first_seen_ms: 1_764_547_200_000,
            other_last_seen_ms: 1_764_547_200_000,
            other_first_node: "edge-sh-2".to_owned(),
            at_once: true,
        };
        let mark = TrustPolicy::default().mark(Some(&t), Some(&contest));
        assert!(mark.low);
        let why = mark.why_low.as_deref().unwrap_or("");
        assert!(
            why.contains("65b60673d6ed884b") && why.contains("edge-sh-2"),
            "{why}"
        );
        assert!(
            why.contains("2025-12-01") && why.contains("cloned"),
            "{why}"
        );
        assert_eq!(mark.key_contest.as_ref(), Some(&contest));
        let lenient = TrustPolicy {
            key_changed_is_low: false,
            ..TrustPolicy::default()
        };
        let mark = lenient.mark(Some(&t), Some(&contest));
        assert!(!mark.low, "{mark:?}");
        // Still recorded, for the evidence.
        assert!(mark.key_contest.is_some());
    }
}
