//! Traffic units and their per-minute history.
//!
//! A unit is what traffic is accounted to: the source prefix (IPv4 /24,
//! IPv6 /56: one subscriber line or one NAT pool, and the finest grain an
//! address-hopping flooder cannot escape cheaply), the `install_id` a report
//! names, and the configured path pattern it arrived on.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;
use utoipa::ToSchema;

use super::band::{Band, BandMemory, BandRules};

/// The kind of a traffic unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnitKind {
    /// A source prefix: IPv4 /24 or IPv6 /56 of the egress address.
    Prefix,
    /// A probe installation (`install_id`).
    Install,
    /// A configured ingest path pattern.
    Path,
}

impl UnitKind {
    /// Every kind, in a fixed order.
    pub const ALL: [Self; 3] = [Self::Prefix, Self::Install, Self::Path];

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Prefix => "prefix",
            Self::Install => "install",
            Self::Path => "path",
        }
    }

    /// The wire name parsed back.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One traffic unit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnitKey {
    /// A source prefix.
    Prefix(IpNet),
    /// An `install_id`.
    Install(String),
    /// A path pattern.
    Path(String),
}

impl UnitKey {
    /// The prefix unit of an egress address.
    pub fn prefix_of(ip: IpAddr) -> Self {
        Self::Prefix(source_prefix(ip))
    }

    /// Its kind.
    pub const fn kind(&self) -> UnitKind {
        match self {
            Self::Prefix(_) => UnitKind::Prefix,
            Self::Install(_) => UnitKind::Install,
            Self::Path(_) => UnitKind::Path,
        }
    }

    /// The unit's name without its kind (`203.0.113.0/24`, the install id,
    /// the pattern).
    pub fn name(&self) -> String {
        match self {
            Self::Prefix(net) => net.to_string(),
            Self::Install(s) | Self::Path(s) => s.clone(),
        }
    }

    /// A unit from its kind and name (as stored).
    pub fn from_parts(kind: UnitKind, name: &str) -> Option<Self> {
        match kind {
            UnitKind::Prefix => name.parse().ok().map(Self::Prefix),
            UnitKind::Install => Some(Self::Install(name.to_owned())),
            UnitKind::Path => Some(Self::Path(name.to_owned())),
        }
    }
}

impl fmt::Display for UnitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind().as_str(), self.name())
    }
}

/// The source prefix of an address: IPv4 /24, IPv6 /56; an IPv4-mapped
/// IPv6 address (a dual-stack socket) counts as its IPv4 address.
pub fn source_prefix(ip: IpAddr) -> IpNet {
    match ip {
        IpAddr::V4(v4) => v4_prefix(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_prefix(v4),
            None => v6_prefix(v6),
        },
    }
}

fn v4_prefix(ip: Ipv4Addr) -> IpNet {
    let net = Ipv4Addr::from(u32::from(ip) & 0xffff_ff00);
    Ipv4Net::new(net, 24).map_or(IpNet::V4(Ipv4Net::default()), IpNet::V4)
}

fn v6_prefix(ip: Ipv6Addr) -> IpNet {
    let mask = !0_u128 << (128 - 56);
    let net = Ipv6Addr::from(u128::from(ip) & mask);
    Ipv6Net::new(net, 56).map_or(IpNet::V6(Ipv6Net::default()), IpNet::V6)
}

/// One minute of one unit's traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Bucket {
    /// Minutes since the Unix epoch.
    pub(crate) minute: u64,
    /// Requests (throttled ones included: they are the unit's real rate).
    pub(crate) requests: u32,
    /// Body bytes read.
    pub(crate) bytes: u64,
    /// Reports refused as invalid, too large or of the wrong media type.
    pub(crate) rejects: u32,
    /// Requests answered 429.
    pub(crate) throttled: u32,
    /// The request count the band learns from: an anomalous minute is
    /// clipped to the band's upper edge, so that a long flood does not
    /// teach the band to accept it.
    pub(crate) learned: u32,
}

/// A unit's state.
#[derive(Debug, Clone)]
pub(crate) struct UnitState {
    /// The first minute the unit was seen.
    pub(crate) first_minute: u64,
    /// Closed minutes with traffic, oldest first, within the history window.
    history: VecDeque<Bucket>,
    /// The `learned` counts of `history` summed.
    history_learned: u64,
    /// The minute being counted.
    pub(crate) current: Bucket,
    /// The band of `current.minute`, learned when the minute began.
    pub(crate) band: Option<Band>,
    /// Whether `current` is already outside its band.
    pub(crate) current_anomalous: bool,
    /// The open anomaly episode, if any.
    pub(crate) episode: Option<u64>,
    /// The request count of the last closed anomalous minute.
    pub(crate) last_anomalous_requests: u32,
    /// A throttling budget while in an episode.
    pub(crate) budget: Option<super::budget::TokenBucket>,
    /// The last band the unit's own history taught alone (or, until there
    /// is one, the band remembered from before a restart): written with
    /// its trust row, and counted while the unit is young again.
    pub(crate) memory: Option<BandMemory>,
}

impl UnitState {
    /// A unit first seen in `minute`.
    pub(crate) fn new(minute: u64) -> Self {
        Self {
            first_minute: minute,
            history: VecDeque::new(),
            history_learned: 0,
            current: Bucket {
                minute,
                ..Bucket::default()
            },
            band: None,
            current_anomalous: false,
            episode: None,
            last_anomalous_requests: 0,
            budget: None,
            memory: None,
        }
    }

    /// The last minute with traffic.
    pub(crate) fn last_active_minute(&self) -> u64 {
        if self.current.requests > 0 {
            self.current.minute
        } else {
            self.history.back().map_or(self.first_minute, |b| b.minute)
        }
    }

    /// Moves to `now` if the current minute is over: returns the closed
    /// minute (when it had traffic) and whether it was anomalous. Buckets
    /// older than `keep` minutes are dropped.
    pub(crate) fn roll(&mut self, now: u64, keep: u32) -> Option<(Bucket, bool)> {
        if self.current.minute >= now {
            return None;
        }
        let mut closed = self.current;
        let anomalous = self.current_anomalous;
        closed.learned = if anomalous {
            let upper = self.band.map_or(f64::from(closed.requests), |b| b.upper);
            // Floored, so the clipped count itself is inside the band.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let clipped = upper.max(0.0).floor().min(f64::from(u32::MAX)) as u32;
            closed.requests.min(clipped)
        } else {
            closed.requests
        };
        self.current = Bucket {
            minute: now,
            ..Bucket::default()
        };
        self.band = None;
        self.current_anomalous = false;
        let had_traffic = closed.requests > 0 || closed.rejects > 0;
        if had_traffic {
            self.history.push_back(closed);
            self.history_learned = self
                .history_learned
                .saturating_add(u64::from(closed.learned));
        }
        let oldest = now.saturating_sub(u64::from(keep));
        while let Some(old) = self.history.pop_front() {
            if old.minute >= oldest {
                self.history.push_front(old);
                break;
            }
            self.history_learned = self.history_learned.saturating_sub(u64::from(old.learned));
        }
        had_traffic.then_some((closed, anomalous))
    }

    /// How much the unit has established by its traffic: its requests in
    /// the history window (anomalous minutes clipped to their band, as the
    /// band learns them) and in the current minute. A source spraying new
    /// units has next to none in each.
    pub(crate) fn weight(&self) -> u64 {
        self.history_learned
            .saturating_add(u64::from(self.current.requests))
    }

    /// Completed minutes observed since the unit was first seen, at most
    /// `keep`.
    pub(crate) fn observed_minutes(&self, keep: u32) -> u64 {
        self.current
            .minute
            .saturating_sub(self.first_minute)
            .min(u64::from(keep))
    }

    /// Starts the unit's history afresh when none of it is left, that is
    /// when it has been quiet for the whole history window: learned from
    /// that silence its band would be the floor's, and its remembered band
    /// (`memory`) would be replaced by it. Made young again instead, it is
    /// judged as after a restart: by the widest of its new history, the
    /// node's norm and its remembered band (while that is at most a day
    /// old), until it has `traffic.min_history_minutes` of history again.
    pub(crate) fn restart_if_dormant(&mut self) {
        if self.history.is_empty() && self.current.minute > self.first_minute {
            self.first_minute = self.current.minute;
        }
    }

    /// The band learned from the closed minutes before `current` (quiet
    /// minutes count as 0); `None` without any closed minute yet.
    pub(crate) fn learn_band(&self, keep: u32, rules: BandRules) -> Option<Band> {
        let n = self.observed_minutes(keep);
        if n == 0 {
            return None;
        }
        let n_usize = usize::try_from(n).unwrap_or(usize::MAX);
        let mut counts = vec![0.0_f64; n_usize];
        let start = self.current.minute - n;
        for b in &self.history {
            if b.minute >= start
                && let Some(slot) = usize::try_from(b.minute - start)
                    .ok()
                    .and_then(|i| counts.get_mut(i))
            {
                *slot = f64::from(b.learned);
            }
        }
        Some(Band::learn(&mut counts, rules))
    }

    /// The last closed minute's bucket, if it had traffic and is `minute`.
    pub(crate) fn closed_bucket(&self, minute: u64) -> Option<&Bucket> {
        self.history.back().filter(|b| b.minute == minute)
    }

    /// Requests in the last `minutes` closed minutes and the current one.
    #[cfg(test)]
    pub(crate) fn recent_requests(&self, minutes: u64) -> u64 {
        let oldest = self.current.minute.saturating_sub(minutes);
        self.history
            .iter()
            .filter(|b| b.minute >= oldest)
            .map(|b| u64::from(b.requests))
            .sum::<u64>()
            + u64::from(self.current.requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_v4_24_and_v6_56() {
        let p = |s: &str| source_prefix(s.parse().unwrap()).to_string();
        assert_eq!(p("203.0.113.77"), "203.0.113.0/24");
        assert_eq!(p("2001:db8:aa:bbcc::1"), "2001:db8:aa:bb00::/56");
        assert_eq!(p("::ffff:198.51.100.9"), "198.51.100.0/24");
        assert_eq!(
            UnitKey::prefix_of("127.0.1.5".parse().unwrap()),
            UnitKey::prefix_of("127.0.1.200".parse().unwrap())
        );
        assert_ne!(
            UnitKey::prefix_of("127.0.1.5".parse().unwrap()),
            UnitKey::prefix_of("127.0.2.5".parse().unwrap())
        );
    }

    #[test]
    fn keys_round_trip_through_their_parts() {
        for key in [
            UnitKey::prefix_of("192.0.2.1".parse().unwrap()),
            UnitKey::Install("tid-1".to_owned()),
            UnitKey::Path("/api/v1/report".to_owned()),
        ] {
            assert_eq!(UnitKey::from_parts(key.kind(), &key.name()), Some(key));
        }
        assert_eq!(UnitKind::parse("install"), Some(UnitKind::Install));
        assert_eq!(UnitKind::parse("nope"), None);
    }

    #[test]
    fn rolling_keeps_a_bounded_history_with_quiet_minutes_as_zero() {
        let rules = BandRules {
            mads: 6.0,
            floor: 5.0,
        };
        let mut u = UnitState::new(100);
        assert!(u.learn_band(60, rules).is_none());
        u.current.requests = 3;
        assert_eq!(u.roll(100, 60), None, "same minute");
        let (closed, anomalous) = u.roll(102, 60).expect("closed");
        assert_eq!((closed.minute, closed.requests, anomalous), (100, 3, false));
        u.current.requests = 2;
        assert_eq!(u.weight(), 5, "the window's and the current minute's");
        u.current.requests = 0;
        // Minutes 100 (3) and 101 (quiet).
        let band = u.learn_band(60, rules).expect("band");
        assert!((band.median - 1.5).abs() < 1e-9, "{band:?}");
        // Far later, the old minute has left the window.
        assert_eq!(u.roll(500, 60), None, "the current minute had no traffic");
        assert_eq!(u.recent_requests(1000), 0);
        assert_eq!(u.weight(), 0, "the window moved on");
        assert_eq!(u.observed_minutes(60), 60);
        assert!(u.learn_band(60, rules).expect("band").median.abs() < 1e-9);
        // Quiet for the whole window, it starts its history afresh.
        u.restart_if_dormant();
        assert_eq!(u.observed_minutes(60), 0);
        assert!(u.learn_band(60, rules).is_none());
        assert_eq!(u.first_minute, 500);
    }

    #[test]
    fn a_unit_with_history_left_is_not_restarted() {
        let mut u = UnitState::new(100);
        u.current.requests = 3;
        u.roll(130, 60);
        u.restart_if_dormant();
        assert_eq!((u.first_minute, u.observed_minutes(60)), (100, 30));
        // Nor is a unit in its first minute.
        let mut fresh = UnitState::new(100);
        fresh.restart_if_dormant();
        assert_eq!(fresh.first_minute, 100);
    }
}
