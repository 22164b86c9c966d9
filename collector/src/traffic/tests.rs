//! The monitor as a whole, on a manual clock: bands, episodes, budgets and
//! trust together.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use lineprobe_shared::{SignatureCheck, TrustReason};

use super::*;
use crate::CollectorConfig;

/// 2026-11-22 00:00:00 UTC, a minute boundary.
const T0: u64 = 1_795_305_600_000;

fn config(edit: impl FnOnce(&mut CollectorConfig)) -> CollectorConfig {
    let mut c = CollectorConfig {
        node_id: "test".to_owned(),
        ..CollectorConfig::default()
    };
    c.public.paths = vec!["/api/v1/report".to_owned()];
    c.traffic.min_anomaly_requests_per_minute = 20;
    c.traffic.node_capacity_per_second = 100.0;
    c.traffic.anomalous_unit_share = 0.05; // 5 requests/s, bursts of 10
    c.traffic.anomalous_total_share = 0.5;
    c.trust.initial = 40;
    edit(&mut c);
    c.validate().expect("valid");
    c
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn send(t: &Traffic, from: &str) -> bool {
    match t.admit(ip(from), "/api/v1/report") {
        Admission::Proceed(ticket) => {
            t.finish(&ticket, IngestOutcome::Stored);
            true
        }
        Admission::Throttled { retry_after_secs } => {
            assert_eq!(retry_after_secs, 60);
            false
        }
    }
}

#[test]
fn a_steady_unit_is_never_anomalous_and_gains_trust() {
    let clock = ManualClock::at(T0);
    let t = Traffic::new(&config(|_| {}), clock.clone(), None);
    for _ in 0..120 {
        for _ in 0..5 {
            assert!(send(&t, "198.51.100.7"));
        }
        clock.advance(Duration::from_mins(1));
        t.sweep();
    }
    assert!(t.episodes(false, 10).is_empty());
    let prefix = UnitKey::prefix_of(ip("198.51.100.7"));
    assert!(t.trust_score(&prefix) > 99.0, "{}", t.trust_score(&prefix));
}

#[test]
fn a_flood_is_one_episode_throttled_while_others_pass() {
    let clock = ManualClock::at(T0);
    let t = Traffic::new(&config(|_| {}), clock.clone(), None);
    // Ten quiet minutes of history for both.
    for _ in 0..10 {
        assert!(send(&t, "203.0.113.5"));
        assert!(send(&t, "198.51.100.7"));
        clock.advance(Duration::from_mins(1));
        t.sweep();
    }
    // Three minutes of flood at 50 requests a second.
    let mut throttled = 0;
    let mut passed = 0;
    for _ in 0..(3 * 60 * 50) {
        if send(&t, "203.0.113.77") {
            passed += 1;
        } else {
            throttled += 1;
        }
        clock.advance(Duration::from_millis(20));
    }
    // The normal unit still passes every time.
    for _ in 0..5 {
        assert!(send(&t, "198.51.100.7"));
    }
    assert!(throttled > 5_000, "throttled {throttled}");
    // The first 20 of the first minute, a burst of 10, then 5 a second.
    assert!((800..1_000).contains(&passed), "passed {passed}");
    let episodes = t.episodes(true, 10);
    let flood: Vec<&Episode> = episodes
        .iter()
        .filter(|e| e.kind == UnitKind::Prefix)
        .collect();
    assert_eq!(flood.len(), 1, "{episodes:#?}");
    let e = flood[0];
    assert_eq!(e.unit, "203.0.113.0/24");
    assert!(e.ongoing);
    assert_eq!(e.anomalous_minutes, 3);
    assert_eq!(e.requests, 9_000);
    assert_eq!(e.throttled, throttled);
    assert!(e.peak_degree > 1_000.0, "{e:?}");
    assert_eq!(e.peak_requests_per_minute, 3_000);
    // The path unit saw the flood too: watched, never throttled.
    assert!(episodes.iter().any(|e| e.kind == UnitKind::Path));

    // Trust: the flooder is low and named so; the normal source is not.
    let prefix = UnitKey::prefix_of(ip("203.0.113.5"));
    // 40, +10 for ten clean minutes, +1 for the flood's first minute
    // before it crossed the band, -20 for the episode, -5 for each further
    // anomalous minute.
    assert!(
        (t.trust_score(&prefix) - 21.0).abs() < 1e-9,
        "{}",
        t.trust_score(&prefix)
    );
    let low = t.low_trust(10);
    assert_eq!(low.len(), 1);
    assert_eq!(low[0].unit, "203.0.113.0/24");
    assert!(low[0].in_episode);

    // Quiet again: the episode closes after the gap.
    clock.advance(Duration::from_mins(3));
    t.sweep();
    assert!(t.episodes(true, 10).is_empty());
    let closed = t.episodes(false, 10);
    assert!(closed.iter().all(|e| !e.ongoing && e.ended_at.is_some()));
    assert!(
        send(&t, "203.0.113.5"),
        "the budget is gone with the episode"
    );
}

#[test]
fn a_quiet_units_first_burst_is_not_an_anomaly() {
    let clock = ManualClock::at(T0);
    let t = Traffic::new(&config(|_| {}), clock.clone(), None);
    // A probe coming back after an outage sends its spool: 15 reports.
    for _ in 0..15 {
        assert!(send(&t, "192.0.2.1"));
    }
    t.sweep();
    assert!(t.episodes(false, 10).is_empty());
}

#[test]
fn a_young_unit_is_held_to_the_node_norm() {
    let clock = ManualClock::at(T0);
    let t = Traffic::new(&config(|_| {}), clock.clone(), None);
    // Many busy NAT prefixes on this node send 100 requests a minute (their
    // first minutes are anomalies: nothing was known of them, nor of the
    // node; their bands then widen within a few minutes).
    for _ in 0..15 {
        for i in 0..20 {
            for _ in 0..100 {
                send(&t, &format!("10.0.{i}.1"));
            }
        }
        clock.advance(Duration::from_mins(1));
        t.sweep();
    }
    assert!(t.episodes(true, 100).is_empty(), "the busy units settled");
    let before = t.episodes(false, 100).len();
    // A new one like them is not an anomaly…
    for _ in 0..110 {
        assert!(send(&t, "10.9.9.9"));
    }
    let new: Vec<Episode> = t
        .episodes(false, 100)
        .into_iter()
        .filter(|e| e.unit == "10.9.9.0/24")
        .collect();
    assert!(new.is_empty(), "{new:#?}");
    // …but one far beyond them is.
    for _ in 0..2_000 {
        send(&t, "10.9.8.9");
    }
    assert!(
        t.episodes(false, 100)
            .iter()
            .any(|e| e.unit == "10.9.8.0/24"),
        "{before}"
    );
}

#[test]
fn a_flood_that_changes_character_becomes_a_second_episode() {
    let clock = ManualClock::at(T0);
    let t = Traffic::new(
        &config(|c| {
            c.traffic.anomalous_unit_share = 0.5;
            c.traffic.node_capacity_per_second = 1_000.0;
        }),
        clock.clone(),
        None,
    );
    for _ in 0..10 {
        send(&t, "203.0.113.5");
        clock.advance(Duration::from_mins(1));
    }
    for per_minute in [50, 60, 5_000] {
        for _ in 0..per_minute {
            send(&t, "203.0.113.5");
        }
        clock.advance(Duration::from_mins(1));
    }
    t.sweep();
    let eps: Vec<Episode> = t
        .episodes(false, 10)
        .into_iter()
        .filter(|e| e.kind == UnitKind::Prefix)
        .collect();
    assert_eq!(eps.len(), 2, "{eps:#?}");
    // Newest first: the 5000-a-minute episode, then the first two minutes.
    assert_eq!(eps[0].requests, 5_000);
    assert_eq!(eps[1].requests, 110);
    assert_eq!(eps[1].anomalous_minutes, 2);
}

#[test]
fn arrival_trust_names_the_episode_and_the_unsigned_cap() {
    let clock = ManualClock::at(T0);
    let t = Traffic::new(&config(|_| {}), clock.clone(), None);
    let Admission::Proceed(mut ticket) = t.admit(ip("198.51.100.7"), "/api/v1/report") else {
        panic!("throttled");
    };
    t.identify(&mut ticket, "tid-1", SignatureCheck::Unsigned)
        .expect("not throttled");
    let trust = t
        .arrival_trust(&ticket, SignatureCheck::Unsigned)
        .expect("enabled");
    assert_eq!(trust.score.get(), 40);
    assert_eq!(trust.signature, SignatureCheck::Unsigned);
    assert!(!trust.reasons.contains(&TrustReason::AnomalyEpisode));
    t.finish(&ticket, IngestOutcome::TooLarge);
    // The reject lowered the source prefix only: an unsigned report proves
    // nothing about the installation it names.
    let prefix = UnitKey::prefix_of(ip("198.51.100.7"));
    let install = UnitKey::Install("tid-1".to_owned());
    assert!((t.trust_score(&prefix) - 35.0).abs() < 1e-9);
    assert!((t.trust_score(&install) - 40.0).abs() < 1e-9);
    // A verified report's reject is the installation's own.
    let Admission::Proceed(mut ticket) = t.admit(ip("198.51.100.7"), "/api/v1/report") else {
        panic!("throttled");
    };
    t.identify(&mut ticket, "tid-1", SignatureCheck::Verified)
        .expect("not throttled");
    t.finish(&ticket, IngestOutcome::TooLarge);
    assert!((t.trust_score(&install) - 35.0).abs() < 1e-9);
}

#[test]
fn disabled_accounting_serves_everything_and_scores_nothing() {
    let clock = ManualClock::at(T0);
    let t = Traffic::new(&config(|c| c.traffic.enabled = false), clock, None);
    for _ in 0..10_000 {
        assert!(send(&t, "203.0.113.5"));
    }
    let Admission::Proceed(ticket) = t.admit(ip("203.0.113.5"), "/api/v1/report") else {
        panic!("throttled");
    };
    assert!(t.arrival_trust(&ticket, SignatureCheck::Unsigned).is_none());
    assert!(t.episodes(false, 10).is_empty());
}

#[test]
fn the_unit_table_is_bounded() {
    let clock = ManualClock::at(T0);
    let t = Traffic::new(&config(|c| c.traffic.max_units = 100), clock.clone(), None);
    for i in 0..1_000_u32 {
        let a = i.to_be_bytes();
        send(&t, &format!("10.{}.{}.1", a[2], a[3]));
        if i % 100 == 0 {
            clock.advance(Duration::from_mins(1));
        }
    }
    let m = lock(&t.monitor);
    let prefixes = m.tables.get(&UnitKind::Prefix).map_or(0, HashMap::len);
    assert!(prefixes <= 100, "{prefixes}");
    drop(m);
    let _ = Arc::clone(&clock);
}

#[test]
fn a_clock_stepped_back_does_not_make_steady_units_anomalous() {
    let clock = ManualClock::at(T0);
    // 100 requests a minute are within the floor from the first minute.
    let t = Traffic::new(
        &config(|c| c.traffic.min_anomaly_requests_per_minute = 100),
        clock.clone(),
        None,
    );
    let steady = |t: &Traffic| {
        for _ in 0..100 {
            assert!(send(t, "198.51.100.7"), "a steady unit is never throttled");
        }
    };
    for _ in 0..15 {
        steady(&t);
        clock.advance(Duration::from_mins(1));
        t.sweep();
    }
    let prefix = UnitKey::prefix_of(ip("198.51.100.7"));
    let before = t.trust_score(&prefix);
    // The system clock is stepped back ten minutes (a VM resumed, a wrong
    // clock corrected): the minutes it already counted come again. Held at
    // the latest minute seen, the unit's traffic of the next minutes would
    // pile up in one bucket and look like a flood.
    clock.rewind(Duration::from_mins(10));
    for _ in 0..5 {
        steady(&t);
        clock.advance(Duration::from_mins(1));
        t.sweep();
    }
    assert!(
        t.episodes(false, 10).is_empty(),
        "{:#?}",
        t.episodes(false, 10)
    );
    assert!(
        t.trust_score(&prefix) >= before,
        "{}",
        t.trust_score(&prefix)
    );
}

#[test]
fn a_clock_stepped_back_neither_frees_a_flooder_nor_keeps_its_episode_open() {
    let clock = ManualClock::at(T0);
    let t = Traffic::new(&config(|_| {}), clock.clone(), None);
    for _ in 0..10 {
        assert!(send(&t, "203.0.113.5"));
        clock.advance(Duration::from_mins(1));
        t.sweep();
    }
    for _ in 0..200 {
        send(&t, "203.0.113.5");
    }
    assert!(!send(&t, "203.0.113.5"), "throttled in its episode");
    clock.rewind(Duration::from_hours(1));
    assert!(!send(&t, "203.0.113.5"), "still throttled");
    // Its budget refills at its rate as the clock runs on.
    clock.advance(Duration::from_secs(1));
    assert!(send(&t, "203.0.113.5"), "the budget refilled");
    // Quiet for longer than the gap, the episode closes (it would stay
    // open, throttling, until the clock came back).
    clock.advance(Duration::from_mins(3));
    t.sweep();
    assert!(
        t.episodes(true, 10).is_empty(),
        "{:#?}",
        t.episodes(true, 10)
    );
    assert!(send(&t, "203.0.113.5"));
}

#[test]
fn a_spray_of_new_prefixes_does_not_evict_busy_units() {
    let clock = ManualClock::at(T0);
    let t = Traffic::new(&config(|c| c.traffic.max_units = 100), clock.clone(), None);
    let busy = |t: &Traffic| {
        for i in 0..10 {
            for _ in 0..30 {
                send(t, &format!("10.0.{i}.1"));
            }
        }
    };
    // Ten busy NAT prefixes settle into their bands.
    for _ in 0..15 {
        busy(&t);
        clock.advance(Duration::from_mins(1));
        t.sweep();
    }
    assert!(t.episodes(true, 100).is_empty(), "the busy units settled");
    let opened = t.episodes_opened();
    // Each minute, before they send, 150 new prefixes send one request
    // each: the table overflows. Forgotten, a busy unit would be a young
    // one again, held to the floor, and its traffic an episode.
    for minute in 0..5_u8 {
        for j in 0..150_u8 {
            send(&t, &format!("10.{}.{j}.1", minute + 1));
        }
        busy(&t);
        clock.advance(Duration::from_mins(1));
        t.sweep();
    }
    assert_eq!(t.episodes_opened(), opened, "{:#?}", t.episodes(true, 100));
    let m = lock(&t.monitor);
    let prefixes = m.tables.get(&UnitKind::Prefix).map_or(0, HashMap::len);
    assert!(prefixes <= 100, "{prefixes}");
}

/// A unit quiet for longer than the history window keeps its band, as
/// across a restart: back at its usual rate it is no anomaly, far above it
/// it is, and a band more than a day old no longer counts.
#[test]
fn a_unit_back_after_a_long_silence_is_judged_by_its_remembered_band() {
    let clock = ManualClock::at(T0);
    let t = Traffic::new(&config(|_| {}), clock.clone(), None);
    let episodes_of = |unit: &str| episodes_of(&t, unit);
    // Two busy NAT prefixes grow to 100 requests a minute (slowly enough
    // never to leave their bands, the floor being 20) and stay there for a
    // history window.
    for k in 0..=76_u32 {
        for from in ["198.51.100.7", "203.0.113.7"] {
            for _ in 0..(20 + 5 * k).min(100) {
                assert!(send(&t, from), "minute {k}");
            }
        }
        clock.advance(Duration::from_mins(1));
        t.sweep();
    }
    assert_eq!(
        episodes_of("198.51.100.0/24") + episodes_of("203.0.113.0/24"),
        0
    );
    // Quiet for an hour and a half: nothing of their history is left.
    quiet_for(&t, &clock, 90);
    // One is back at its usual rate: no anomaly; far above it, one.
    judged_by_its_band(&t, "198.51.100.7", "198.51.100.0/24");
    // The other is back after more than a day: its band is too old.
    clock.advance(Duration::from_hours(23));
    t.sweep();
    for _ in 0..100 {
        send(&t, "203.0.113.7");
    }
    assert_eq!(episodes_of("203.0.113.0/24"), 1);
}

/// Episodes of `unit` (open or closed).
fn episodes_of(t: &Traffic, unit: &str) -> usize {
    t.episodes(false, 1_000)
        .iter()
        .filter(|e| e.unit == unit)
        .count()
}

/// `from` grows to 100 requests a minute over 31 minutes, slowly enough
/// never to leave its band (the floor being 20).
fn grow_to_100_a_minute(t: &Traffic, clock: &ManualClock, from: &str) {
    for k in 0..=30_u32 {
        for _ in 0..(20 + 5 * k).min(100) {
            assert!(send(t, from), "minute {k}");
        }
        clock.advance(Duration::from_mins(1));
        t.sweep();
    }
}

/// Nothing is sent for `minutes`, swept each minute.
fn quiet_for(t: &Traffic, clock: &ManualClock, minutes: u32) {
    for _ in 0..minutes {
        clock.advance(Duration::from_mins(1));
        t.sweep();
    }
}

/// `from`, of `unit`, back at its usual 100 requests: no episode (its
/// band holds it, not the floor of 20, which would make one at the 21st);
/// 500 more, far above the band: one.
fn judged_by_its_band(t: &Traffic, from: &str, unit: &str) {
    for _ in 0..100 {
        assert!(send(t, from));
    }
    assert_eq!(episodes_of(t, unit), 0, "{:#?}", t.episodes(false, 10));
    for _ in 0..500 {
        send(t, from);
    }
    assert_eq!(episodes_of(t, unit), 1);
}

/// A busy unit evicted from a full table (quiet for a while, it had the
/// least traffic in its window) keeps its band as across a restart: back
/// at its usual rate it is no anomaly.
#[test]
fn an_evicted_unit_is_judged_by_its_remembered_band() {
    let clock = ManualClock::at(T0);
    let t = Traffic::new(&config(|c| c.traffic.max_units = 16), clock.clone(), None);
    let episodes_of = |unit: &str| episodes_of(&t, unit);
    grow_to_100_a_minute(&t, &clock, "198.51.100.7");
    // Then it is quiet while fifteen other prefixes send steadily, each
    // more in the window than it has left.
    for _ in 0..55 {
        for i in 0..15 {
            for _ in 0..15 {
                send(&t, &format!("10.0.{i}.1"));
            }
        }
        clock.advance(Duration::from_mins(1));
        t.sweep();
    }
    // A seventeenth prefix fills the table: the quiet one is evicted.
    send(&t, "203.0.113.9");
    let a = UnitKey::prefix_of(ip("198.51.100.7"));
    assert!(
        !lock(&t.monitor).tables[&UnitKind::Prefix].contains_key(&a),
        "evicted"
    );
    assert_eq!(episodes_of("198.51.100.0/24"), 0);
    // Back at its usual rate: judged by its band, not the floor of 20.
    for _ in 0..100 {
        assert!(send(&t, "198.51.100.7"));
    }
    assert_eq!(
        episodes_of("198.51.100.0/24"),
        0,
        "{:#?}",
        t.episodes(false, 10)
    );
}

/// A busy unit quiet for more than half (not all) of its history window
/// is judged by its band from when it was busy, not by the floor that the
/// silence alone would teach; far above that band it is still an anomaly.
#[test]
fn a_unit_back_after_a_short_silence_keeps_its_band() {
    let clock = ManualClock::at(T0);
    let t = Traffic::new(&config(|_| {}), clock.clone(), None);
    grow_to_100_a_minute(&t, &clock, "198.51.100.7");
    // Quiet for 40 of the 60 minutes of its window.
    quiet_for(&t, &clock, 40);
    judged_by_its_band(&t, "198.51.100.7", "198.51.100.0/24");
}
