//! Receiver defences: per-minute traffic accounting per unit (source prefix,
//! `install_id`, path pattern), anomaly detection against a band learned
//! from each unit's history, anomaly episodes, budgets that throttle units
//! in an episode (429 with `Retry-After`) so that normal probes keep their
//! share of the node, and trust scores that travel with each report.
//!
//! Everything here runs under two short-held locks (traffic, then trust,
//! never both at once) and does constant work per request, except the band
//! of a unit, learned once per unit and minute. A background task
//! ([`Traffic::sweep`]) closes minutes and episodes of units that went
//! quiet, refreshes the gauges and writes changed trust scores to the
//! staging database, each with the unit's band (see [`BandMemory`]), and
//! the bands of path units, which have no score ([`PathBand`]), so that
//! after a restart a busy unit is judged against its own remembered band
//! until it has history again.

pub(crate) mod api;
mod band;
mod budget;
mod config;
mod episodes;
mod trust;
mod units;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use lineprobe_shared::{ArrivalTrust, SignatureCheck};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use self::api::traffic_routes;
pub(crate) use self::band::BAND_MEMORY_MINUTES;
pub use self::band::{Band, BandMemory, BandRules, PathBand};
use self::budget::TokenBucket;
pub use self::config::{TrafficConfig, TrustConfig};
pub use self::episodes::Episode;
use self::episodes::EpisodeLog;
pub use self::trust::{LowTrustUnit, TrustEntry, TrustRetention, TrustRow};
use self::trust::{TrustBook, UnitFlags};
use self::units::{Bucket, UnitState};
pub use self::units::{UnitKey, UnitKind, source_prefix};
use crate::metrics::IngestOutcome;
use crate::{CollectorConfig, Metrics, PathPattern, Staging};

/// Where the traffic monitor reads the time: the system clock, or a manual
/// one in tests.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
    }
}

/// A clock that moves only when told (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock at `ms` since the epoch.
    pub fn at(ms: u64) -> Arc<Self> {
        Arc::new(Self(AtomicU64::new(ms)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// Moves the clock back (a system clock stepped back).
    pub fn rewind(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_sub(ms))
            });
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Rows whose bands are looked up per hold of the traffic lock when trust
/// scores are written.
const BAND_LOOKUPS_PER_LOCK: usize = 4_096;

/// How often the background task sweeps.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// A step back of the clock longer than this (ms) is logged.
const CLOCK_STEP_LOGGED_MS: u64 = 1_000;

/// The answer to a request's admission.
#[derive(Debug)]
pub enum Admission {
    /// Serve it; hand the ticket back through [`Traffic::finish`].
    Proceed(Ticket),
    /// Answer 429 with `Retry-After` this many seconds; nothing is read.
    Throttled {
        /// Seconds.
        retry_after_secs: u64,
    },
}

/// What the monitor knows of one request while it is served.
#[derive(Debug, Clone)]
pub struct Ticket {
    minute: u64,
    prefix: UnitKey,
    path: Option<UnitKey>,
    /// Set only once the report passed its signature check (see
    /// [`Traffic::identify`]).
    install: Option<UnitKey>,
    /// The report's signature verified against a key enrolled for
    /// `install`.
    install_verified: bool,
    /// Its source prefix or `install_id` is in an anomaly episode.
    in_episode: bool,
    /// Body bytes read (after decompression).
    pub bytes: u64,
}

impl Ticket {
    /// The source prefix unit.
    pub fn prefix(&self) -> &UnitKey {
        &self.prefix
    }
}

/// Trust events collected under the traffic lock, applied after it.
enum TrustEvent {
    EpisodeOpened(UnitKey),
    AnomalousMinute(UnitKey),
}

/// The per-unit tables and episodes (under the traffic lock).
#[derive(Debug)]
struct Monitor {
    tables: HashMap<UnitKind, HashMap<UnitKey, UnitState>>,
    /// The node-wide band of each kind, from the last closed minute.
    norms: HashMap<UnitKind, Band>,
    norm_minute: u64,
    episodes: EpisodeLog,
    anomalous_total: TokenBucket,
    opened_total: u64,
    /// The latest time accounted at (ms since the epoch, plus the offset).
    clock_ms: u64,
    /// How far the clock has stepped back since start, in ms (see
    /// [`Traffic::settle`]).
    clock_offset_ms: u64,
    /// Bands restored from the staging store for units not seen since
    /// start, and those of units evicted from a full table, taken by each
    /// unit when it is (next) counted.
    remembered: HashMap<UnitKey, BandMemory>,
    /// The minute after which every band in `remembered` is too old to use
    /// (the map is then dropped).
    remembered_until: u64,
    /// The path units' bands as last written to (or read from) the staging
    /// store: a path's band is written when it differs.
    paths_written: HashMap<UnitKey, BandMemory>,
}

/// The traffic monitor, budgets and trust book of one node.
#[derive(Debug)]
pub struct Traffic {
    config: TrafficConfig,
    clock: Arc<dyn Clock>,
    paths: Vec<(PathPattern, String)>,
    rules: BandRules,
    monitor: Mutex<Monitor>,
    trust: Mutex<TrustBook>,
    metrics: Option<Arc<Metrics>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Traffic {
    /// A monitor for `config`'s `[traffic]` and `[trust]` sections and its
    /// ingest paths, reading `clock`, counting into `metrics`.
    pub fn new(
        config: &CollectorConfig,
        clock: Arc<dyn Clock>,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        let traffic = config.traffic.clone();
        let paths = config
            .public
            .paths
            .iter()
            .filter_map(|p| PathPattern::parse(p).ok().map(|pat| (pat, p.clone())))
            .collect();
        let now = clock.now_ms();
        let rules = BandRules {
            mads: traffic.anomaly_mads,
            floor: f64::from(traffic.min_anomaly_requests_per_minute),
        };
        let total_rate = traffic.node_capacity_per_second * traffic.anomalous_total_share;
        Self {
            paths,
            rules,
            monitor: Mutex::new(Monitor {
                tables: UnitKind::ALL
                    .into_iter()
                    .map(|k| (k, HashMap::new()))
                    .collect(),
                norms: HashMap::new(),
                norm_minute: 0,
                episodes: EpisodeLog::new(traffic.episodes_kept),
                anomalous_total: TokenBucket::new(total_rate, now),
                opened_total: 0,
                clock_ms: now,
                clock_offset_ms: 0,
                remembered: HashMap::new(),
                remembered_until: 0,
                paths_written: HashMap::new(),
            }),
            trust: Mutex::new(TrustBook::new(config.trust.clone())),
            config: traffic,
            clock,
            metrics,
        }
    }

    /// How long a throttled request waits for its 429.
    pub fn throttle_delay(&self) -> Duration {
        Duration::from_millis(self.config.throttle_delay_ms)
    }

    /// Whether accounting is on (`traffic.enabled`).
    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    fn minute(now_ms: u64) -> u64 {
        now_ms / 60_000
    }

    /// Counts a request from `peer` on `path` before anything of it is read,
    /// and throttles it when its source prefix is in an anomaly episode and
    /// over its budget.
    pub fn admit(&self, peer: IpAddr, path: &str) -> Admission {
        let prefix = UnitKey::prefix_of(peer);
        let path = self
            .paths
            .iter()
            .find(|(p, _)| p.matches(path))
            .map(|(_, raw)| UnitKey::Path(raw.clone()));
        let mut ticket = Ticket {
            // Read under the traffic lock (see `settle`); unused when off.
            minute: 0,
            prefix,
            path,
            install: None,
            install_verified: false,
            in_episode: false,
            bytes: 0,
        };
        if !self.config.enabled {
            return Admission::Proceed(ticket);
        }
        let mut events = Vec::new();
        let throttled = {
            let mut m = lock(&self.monitor);
            let now = self.settle(&mut m);
            ticket.minute = Self::minute(now);
            // A path is shared by every probe: an episode of it is shown,
            // but taints no report's trust.
            if let Some(path) = &ticket.path {
                self.count(&mut m, path, now, &mut events);
            }
            ticket.in_episode |= self.count(&mut m, &ticket.prefix, now, &mut events);
            Self::over_budget(&mut m, &ticket.prefix, now)
        };
        self.apply(events, ticket.minute);
        if throttled {
            if let Some(metrics) = &self.metrics {
                metrics.traffic_throttled(UnitKind::Prefix.as_str());
            }
            return Admission::Throttled {
                retry_after_secs: self.config.throttle_retry_after_secs,
            };
        }
        Admission::Proceed(ticket)
    }

    /// Counts the report's `install_id` once the report passed its
    /// signature check (`signature` is how), and throttles it (`Err` with
    /// `Retry-After` seconds) when that installation is in an anomaly
    /// episode and over its budget — before the report is staged.
    ///
    /// An `install_id` is no secret: a report that was not checked, or
    /// failed its check, names an installation but proves nothing about
    /// it, so it is never counted for one (only for its source prefix).
    /// Otherwise anyone could put an installation into an episode, and get
    /// its own reports throttled, by naming it in junk. What is counted:
    ///
    /// - a signed report verified with a key enrolled for the installation
    ///   (`Verified`, or `KeyChanged` for a contested one, where the holders
    ///   of its keys share the unit by design);
    /// - an unsigned report accepted as such: the installation has enrolled
    ///   no key (unsigned reports of one that has are refused before this),
    ///   so whoever sends reports in its name is that installation as far
    ///   as the receiver can tell, and could store reports in its name
    ///   anyway; such a unit is scored, but its reports stay capped at
    ///   `trust.unsigned_cap`, and enrolling a key takes it out of reach.
    ///   It is never penalised for a reject (see [`Traffic::finish`]).
    pub fn identify(
        &self,
        ticket: &mut Ticket,
        install_id: &str,
        signature: SignatureCheck,
    ) -> Result<(), u64> {
        let unit = UnitKey::Install(install_id.to_owned());
        ticket.install = Some(unit.clone());
        ticket.install_verified = signature != SignatureCheck::Unsigned;
        if !self.config.enabled {
            return Ok(());
        }
        let mut events = Vec::new();
        let (throttled, now) = {
            let mut m = lock(&self.monitor);
            let now = self.settle(&mut m);
            ticket.in_episode |= self.count(&mut m, &unit, now, &mut events);
            (Self::over_budget(&mut m, &unit, now), now)
        };
        self.apply(events, Self::minute(now));
        if throttled {
            if let Some(metrics) = &self.metrics {
                metrics.traffic_throttled(UnitKind::Install.as_str());
            }
            return Err(self.config.throttle_retry_after_secs);
        }
        Ok(())
    }

    /// The trust of the report `ticket` stands for as it arrives, given its
    /// signature check. `None` when accounting is off.
    pub fn arrival_trust(
        &self,
        ticket: &Ticket,
        signature: SignatureCheck,
    ) -> Option<ArrivalTrust> {
        if !self.config.enabled {
            return None;
        }
        let flags = UnitFlags {
            in_episode: ticket.in_episode,
        };
        Some(lock(&self.trust).arrival(
            &ticket.prefix,
            ticket.install.as_ref(),
            flags,
            signature,
            ticket.minute,
        ))
    }

    /// Records how the request ended: bytes and rejects into its units, and
    /// the outcome into their trust.
    ///
    /// The installation has a part only when [`Traffic::identify`] named it,
    /// that is once the report passed its signature check; a reject then
    /// counts against it only when the signature verified, as only then is
    /// the report known to be the installation's own. Whatever failed
    /// before (a body that is no report, a forged or unsigned report in an
    /// enrolled installation's name) counts against its source prefix
    /// alone.
    pub fn finish(&self, ticket: &Ticket, outcome: IngestOutcome) {
        if !self.config.enabled {
            return;
        }
        let accepted = matches!(outcome, IngestOutcome::Stored | IngestOutcome::Duplicate);
        let rejected = matches!(
            outcome,
            IngestOutcome::Invalid
                | IngestOutcome::TooLarge
                | IngestOutcome::UnsupportedMedia
                | IngestOutcome::SignatureRejected
        );
        let install = ticket
            .install
            .as_ref()
            .filter(|_| !rejected || ticket.install_verified);
        {
            let mut m = lock(&self.monitor);
            let units = [Some(&ticket.prefix), ticket.path.as_ref(), install];
            for unit in units.into_iter().flatten() {
                let Monitor {
                    tables, episodes, ..
                } = &mut *m;
                let Some(state) = tables.get_mut(&unit.kind()).and_then(|t| t.get_mut(unit)) else {
                    continue;
                };
                if state.current.minute == ticket.minute {
                    state.current.bytes = state.current.bytes.saturating_add(ticket.bytes);
                    state.current.rejects += u32::from(rejected);
                }
                if let Some(id) = state.episode {
                    episodes.add(id, 0, ticket.bytes, u64::from(rejected), 0);
                }
            }
        }
        if accepted || rejected {
            let mut book = lock(&self.trust);
            for unit in [Some(&ticket.prefix), install].into_iter().flatten() {
                if accepted {
                    book.accepted(unit, ticket.minute, ticket.in_episode);
                } else {
                    book.rejected(unit, ticket.minute);
                }
            }
        }
    }

    /// The time to account at: the clock plus how far it has stepped back
    /// since start, read under the traffic lock, so that it never goes
    /// back and runs on at the clock's pace after a step back. Held at the
    /// latest time instead, each unit's traffic would pile up in one
    /// minute until the clock came back (every busy unit a flood,
    /// penalised and throttled), budgets would stop refilling and episodes
    /// would not close. Taken back, minutes already counted would come
    /// again. The cost: the times shown (episodes, last seen) run ahead of
    /// the clock by the step until a restart.
    fn settle(&self, m: &mut Monitor) -> u64 {
        let now = self.clock.now_ms().saturating_add(m.clock_offset_ms);
        if now >= m.clock_ms {
            m.clock_ms = now;
            return now;
        }
        let back = m.clock_ms - now;
        if back > CLOCK_STEP_LOGGED_MS {
            tracing::warn!(
                back_ms = back,
                "the clock stepped back; traffic accounting runs on from the latest time seen"
            );
        }
        m.clock_offset_ms = m.clock_offset_ms.saturating_add(back);
        m.clock_ms
    }

    /// Counts one request of `unit`; true when the unit is in an episode.
    fn count(
        &self,
        m: &mut Monitor,
        unit: &UnitKey,
        now_ms: u64,
        events: &mut Vec<TrustEvent>,
    ) -> bool {
        let minute = Self::minute(now_ms);
        let kind = unit.kind();
        let norm = m.norms.get(&kind).copied();
        let Monitor {
            tables,
            episodes,
            opened_total,
            remembered,
            remembered_until,
            ..
        } = m;
        let table = tables.entry(kind).or_default();
        if !table.contains_key(unit) && table.len() >= self.config.max_units {
            let mut memory = Memory {
                bands: remembered,
                until: remembered_until,
                cap: self.config.max_units,
                min_minutes: self.config.min_history_minutes,
            };
            evict(table, episodes, &mut memory, minute);
        }
        let state = table.entry(unit.clone()).or_insert_with(|| {
            let mut state = UnitState::new(minute);
            state.memory = remembered.remove(unit);
            state
        });
        self.advance(unit, state, episodes, minute, events);
        if state.band.is_none() {
            state.band = Some(self.band_for(state, norm, minute));
        }
        state.current.requests = state.current.requests.saturating_add(1);
        let count = f64::from(state.current.requests);
        let before = state.episode;
        let band = state.band.unwrap_or(Band {
            median: 0.0,
            scale: 1.0,
            upper: self.rules.floor,
        });
        if !state.current_anomalous && band.is_anomalous(count) {
            state.current_anomalous = true;
            let joins = state
                .episode
                .and_then(|id| episodes.last_minute(id))
                .is_some_and(|last| {
                    minute <= last + u64::from(self.config.episode_gap_minutes) + 1
                });
            match state.episode {
                Some(id) if joins => {
                    episodes.extend(id, minute);
                    events.push(TrustEvent::AnomalousMinute(unit.clone()));
                }
                _ => {
                    if let Some(old) = state.episode.take() {
                        episodes.close(old, minute);
                    }
                    // The budget refills at the unit's own rate from here.
                    // The new episode starts with the minute's counts so far,
                    // this request included.
                    let id = episodes.open(unit, minute, &state.current, band.median);
                    state.episode = Some(id);
                    state.budget = Some(TokenBucket::new(
                        self.config.node_capacity_per_second * self.config.anomalous_unit_share,
                        now_ms,
                    ));
                    *opened_total = opened_total.saturating_add(1);
                    events.push(TrustEvent::EpisodeOpened(unit.clone()));
                    if let Some(metrics) = &self.metrics {
                        metrics.traffic_episode_opened();
                    }
                }
            }
        }
        if let Some(id) = before
            && state.episode == Some(id)
        {
            episodes.add(id, 1, 0, 0, 0);
        }
        if let Some(id) = state.episode {
            if state.current_anomalous {
                episodes.observe(id, state.current.requests, band.degree(count));
            }
            true
        } else {
            false
        }
    }

    /// Closes the unit's minute when it is over and its episode when it has
    /// been quiet for longer than the gap.
    fn advance(
        &self,
        unit: &UnitKey,
        state: &mut UnitState,
        episodes: &mut EpisodeLog,
        minute: u64,
        events: &mut Vec<TrustEvent>,
    ) {
        if let Some((closed, anomalous)) = state.roll(minute, self.config.history_minutes)
            && anomalous
        {
            if let Some(id) = state.episode {
                let previous = state.last_anomalous_requests;
                let ratio = if previous == 0 {
                    1.0
                } else {
                    f64::from(closed.requests.max(previous))
                        / f64::from(closed.requests.min(previous).max(1))
                };
                if ratio > self.config.alike_ratio
                    && episodes.last_minute(id).is_some_and(|l| l == closed.minute)
                    && closed.minute > 0
                {
                    // The traffic changed character: the changed minute
                    // starts an episode of its own.
                    let new_id = split(episodes, id, unit, &closed);
                    state.episode = Some(new_id);
                    events.push(TrustEvent::EpisodeOpened(unit.clone()));
                    if let Some(metrics) = &self.metrics {
                        metrics.traffic_episode_opened();
                    }
                }
            }
            state.last_anomalous_requests = closed.requests;
        }
        if let Some(id) = state.episode {
            let quiet_too_long = episodes
                .last_minute(id)
                .is_none_or(|last| minute > last + u64::from(self.config.episode_gap_minutes) + 1);
            if quiet_too_long {
                episodes.close(id, minute);
                state.episode = None;
                state.budget = None;
                state.last_anomalous_requests = 0;
            }
        }
    }

    /// The band of a unit's current minute `minute`: its own, and for a
    /// young unit also the node's norm of its kind, whichever allows more.
    ///
    /// While it is young, its band remembered from before the collector
    /// started also counts, if recent enough ([`BandMemory::usable`]):
    /// otherwise a unit busier than the floor would be held to the floor
    /// after every restart, its usual rate an episode and a trust penalty.
    /// It widens the band only that far, so a unit far above its own
    /// remembered rate is still an anomaly, and only until the unit has
    /// `traffic.min_history_minutes` of history again. A unit back after
    /// a silence as long as the history window is young again
    /// ([`UnitState::restart_if_dormant`]), its band remembered from before
    /// the silence counting as after a restart.
    fn band_for(&self, state: &mut UnitState, norm: Option<Band>, minute: u64) -> Band {
        let floor = Band {
            median: 0.0,
            scale: 1.0,
            upper: self.rules.floor,
        };
        state.restart_if_dormant();
        let own = state.learn_band(self.config.history_minutes, self.rules);
        let observed = state.observed_minutes(self.config.history_minutes);
        let young = observed < u64::from(self.config.min_history_minutes);
        if let Some(own) = own
            && !young
        {
            if own.median > 0.0 {
                state.memory = Some(BandMemory::of(own, observed, minute));
                return own;
            }
            // Quiet for at least half its window: learned mostly from that
            // silence, its band is the floor's, and a unit busier than the
            // floor back at its usual rate would be an episode. Its band
            // remembered from when it was busy (at most a day old) counts
            // as after a restart, and the silence does not replace it.
            return state
                .memory
                .filter(|m| m.usable(minute, self.config.min_history_minutes))
                .map_or(own, |m| own.widest(m.band(self.rules)));
        }
        let base = match own {
            Some(own) => own.widest(norm.unwrap_or(floor)),
            None => norm.unwrap_or(floor).widest(floor),
        };
        state
            .memory
            .filter(|m| m.usable(minute, self.config.min_history_minutes))
            .map_or(base, |m| base.widest(m.band(self.rules)))
    }

    /// Takes a token for a unit in an episode: its own budget first, then
    /// the share all anomalous units have together. True: throttle.
    fn over_budget(m: &mut Monitor, unit: &UnitKey, now_ms: u64) -> bool {
        let Monitor {
            tables,
            episodes,
            anomalous_total,
            ..
        } = m;
        let Some(state) = tables.get_mut(&unit.kind()).and_then(|t| t.get_mut(unit)) else {
            return false;
        };
        let (Some(id), Some(budget)) = (state.episode, state.budget.as_mut()) else {
            return false;
        };
        if !budget.try_take(now_ms) {
            state.current.throttled = state.current.throttled.saturating_add(1);
            episodes.add(id, 0, 0, 0, 1);
            return true;
        }
        if !anomalous_total.try_take(now_ms) {
            budget.give_back();
            state.current.throttled = state.current.throttled.saturating_add(1);
            episodes.add(id, 0, 0, 0, 1);
            return true;
        }
        false
    }

    fn apply(&self, events: Vec<TrustEvent>, minute: u64) {
        if events.is_empty() {
            return;
        }
        let mut book = lock(&self.trust);
        for event in events {
            match event {
                // Path units are shared by every probe: they are watched,
                // never scored.
                TrustEvent::EpisodeOpened(unit) if unit.kind() != UnitKind::Path => {
                    tracing::warn!(unit = %unit, "traffic anomaly episode opened");
                    book.episode_opened(&unit, minute);
                }
                TrustEvent::AnomalousMinute(unit) if unit.kind() != UnitKind::Path => {
                    book.anomalous_minute(&unit, minute);
                }
                TrustEvent::EpisodeOpened(unit) => {
                    tracing::warn!(unit = %unit, "traffic anomaly episode opened");
                }
                TrustEvent::AnomalousMinute(_) => {}
            }
        }
    }

    /// Closes finished minutes and episodes of every unit, relearns the
    /// node-wide norms once a minute and refreshes the gauges.
    pub fn sweep(&self) {
        if !self.config.enabled {
            return;
        }
        let mut events = Vec::new();
        let (open, minute) = {
            let mut m = lock(&self.monitor);
            let minute = Self::minute(self.settle(&mut m));
            let Monitor {
                tables,
                episodes,
                norms,
                norm_minute,
                remembered,
                remembered_until,
                ..
            } = &mut *m;
            let relearn = *norm_minute != minute;
            if minute > *remembered_until && !remembered.is_empty() {
                *remembered = HashMap::new();
            }
            for (kind, table) in tables.iter_mut() {
                let mut counts = Vec::new();
                for (unit, state) in table.iter_mut() {
                    self.advance(unit, state, episodes, minute, &mut events);
                    if relearn && let Some(b) = state.closed_bucket(minute.saturating_sub(1)) {
                        counts.push(f64::from(b.learned));
                    }
                }
                if relearn {
                    if counts.is_empty() {
                        norms.remove(kind);
                    } else {
                        norms.insert(*kind, Band::learn(&mut counts, self.rules));
                    }
                }
            }
            *norm_minute = minute;
            (episodes.open_count(), minute)
        };
        self.apply(events, minute);
        if let Some(metrics) = &self.metrics {
            let (prefixes, installs) = lock(&self.trust).low_counts();
            metrics.traffic_gauges(open, prefixes, installs);
        }
    }

    /// Ongoing and recent anomaly episodes, newest first.
    pub fn episodes(&self, ongoing_only: bool, limit: usize) -> Vec<Episode> {
        lock(&self.monitor).episodes.list(ongoing_only, limit)
    }

    /// Episodes opened since start.
    pub fn episodes_opened(&self) -> u64 {
        lock(&self.monitor).opened_total
    }

    /// Units whose trust is below `trust.low_threshold`, lowest first.
    pub fn low_trust(&self, limit: usize) -> Vec<LowTrustUnit> {
        let low = lock(&self.trust).low(limit);
        let m = lock(&self.monitor);
        low.iter()
            .map(|(unit, entry)| {
                let in_episode = m
                    .tables
                    .get(&unit.kind())
                    .and_then(|t| t.get(unit))
                    .is_some_and(|s| s.episode.is_some());
                trust::low_trust_view(unit, entry, in_episode)
            })
            .collect()
    }

    /// The current score of a unit (the initial score when unknown).
    pub fn trust_score(&self, unit: &UnitKey) -> f64 {
        lock(&self.trust).score(unit)
    }

    /// Restores scores read from the staging database, and the bands
    /// stored with them that are recent enough to stand in for their
    /// units' history (at most a day old and learned from at least
    /// `min_history_minutes`; others are dropped).
    pub fn load_trust(&self, rows: Vec<TrustRow>) {
        let minute = Self::minute(self.clock.now_ms());
        let min_minutes = self.config.min_history_minutes;
        let mut book = lock(&self.trust);
        // The same rows as the book keeps: a band outlives no score.
        let bands: Vec<(UnitKey, BandMemory)> = rows
            .iter()
            .take(book.retention().max_units)
            .filter_map(|row| {
                row.band
                    .filter(|b| b.usable(minute, min_minutes))
                    .map(|b| (row.unit.clone(), b))
            })
            .collect();
        book.load(rows);
        drop(book);
        self.remember(bands);
    }

    /// Restores the stored bands of path units, as [`Traffic::load_trust`]
    /// does the others': those of configured patterns, at most a day old
    /// and learned from at least `min_history_minutes`.
    pub fn load_path_bands(&self, bands: Vec<PathBand>) {
        let minute = Self::minute(self.clock.now_ms());
        let min_minutes = self.config.min_history_minutes;
        let bands: Vec<(UnitKey, BandMemory)> = bands
            .into_iter()
            .filter(|p| self.paths.iter().any(|(_, raw)| *raw == p.pattern))
            .map(|p| (UnitKey::Path(p.pattern), p.band))
            .collect();
        {
            let mut m = lock(&self.monitor);
            for (unit, band) in &bands {
                m.paths_written.insert(unit.clone(), *band);
            }
        }
        self.remember(
            bands
                .into_iter()
                .filter(|(_, b)| b.usable(minute, min_minutes))
                .collect(),
        );
    }

    /// Seeds units with bands remembered from before the start: a unit
    /// already seen keeps what it has learned since, the others take theirs
    /// when first counted.
    fn remember(&self, bands: Vec<(UnitKey, BandMemory)>) {
        let mut m = lock(&self.monitor);
        for (unit, band) in bands {
            let until = band.learned_minute.saturating_add(BAND_MEMORY_MINUTES);
            m.remembered_until = m.remembered_until.max(until);
            match m
                .tables
                .get_mut(&unit.kind())
                .and_then(|t| t.get_mut(&unit))
            {
                // Seen since start: what it has taught since comes first.
                Some(state) => {
                    state.memory.get_or_insert(band);
                }
                None => {
                    m.remembered.insert(unit, band);
                }
            }
        }
    }

    /// Writes the scores changed since the last call to `staging`, each
    /// with its unit's band to remember, and the path units' bands that
    /// changed since last written; on failure they stay marked and go with
    /// the next write. Returns how many scores and path bands were written.
    pub async fn flush_trust(&self, staging: &Staging) -> Result<usize, crate::Error> {
        let mut rows = lock(&self.trust).take_dirty();
        // In slices, so that a write of many rows holds the traffic lock
        // (and the requests waiting on it) only briefly at a time.
        for chunk in rows.chunks_mut(BAND_LOOKUPS_PER_LOCK) {
            let m = lock(&self.monitor);
            for row in chunk {
                row.band = m
                    .tables
                    .get(&row.unit.kind())
                    .and_then(|t| t.get(&row.unit))
                    .and_then(|s| s.memory)
                    .or_else(|| m.remembered.get(&row.unit).copied());
            }
        }
        let paths = self.changed_path_bands();
        if rows.is_empty() && paths.is_empty() {
            return Ok(0);
        }
        let n = rows.len() + paths.len();
        let retention = lock(&self.trust).retention();
        match staging
            .save_trust_and_path_bands(rows.clone(), paths.clone(), retention)
            .await
        {
            Ok(()) => {
                let mut m = lock(&self.monitor);
                for PathBand { pattern, band } in paths {
                    m.paths_written.insert(UnitKey::Path(pattern), band);
                }
                Ok(n)
            }
            Err(e) => {
                lock(&self.trust).mark_dirty(&rows);
                Err(e)
            }
        }
    }

    /// The bands of path units that differ from those last written.
    fn changed_path_bands(&self) -> Vec<PathBand> {
        let m = lock(&self.monitor);
        m.tables
            .get(&UnitKind::Path)
            .into_iter()
            .flatten()
            .filter_map(|(unit, state)| {
                let band = state.memory?;
                (m.paths_written.get(unit) != Some(&band)).then(|| PathBand {
                    pattern: unit.name(),
                    band,
                })
            })
            .collect()
    }

    /// Loads the stored scores and path bands, then sweeps every few seconds and writes
    /// changed scores every `trust.flush_secs` until `shutdown`, with a last
    /// write after it.
    pub async fn start(
        self: &Arc<Self>,
        staging: Staging,
        flush_every: Duration,
        shutdown: CancellationToken,
    ) -> Result<JoinHandle<()>, crate::Error> {
        let retention = lock(&self.trust).retention();
        let rows = staging.load_trust(retention).await?;
        let paths = staging.load_path_bands().await?;
        tracing::info!(
            units = rows.len(),
            path_bands = paths.len(),
            "trust scores restored"
        );
        self.load_trust(rows);
        self.load_path_bands(paths);
        let traffic = Arc::clone(self);
        Ok(tokio::spawn(async move {
            let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
            let mut flush = tokio::time::interval(flush_every);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = sweep.tick() => traffic.sweep(),
                    _ = flush.tick() => {
                        if let Err(e) = traffic.flush_trust(&staging).await {
                            tracing::warn!(error = %e, "writing trust scores failed; will retry");
                        }
                    }
                }
            }
            if let Err(e) = traffic.flush_trust(&staging).await {
                tracing::warn!(error = %e, "writing trust scores at shutdown failed");
            }
        }))
    }
}

/// Splits the closed minute `closed` off episode `id` into a new episode.
fn split(episodes: &mut EpisodeLog, id: u64, unit: &UnitKey, closed: &Bucket) -> u64 {
    episodes.retract(id, closed);
    episodes.close(id, closed.minute);
    episodes.open(unit, closed.minute, closed, 0.0)
}

/// Where evicted units' bands go: the monitor's `remembered`, bounded.
struct Memory<'a> {
    bands: &'a mut HashMap<UnitKey, BandMemory>,
    until: &'a mut u64,
    /// Most bands kept so (`traffic.max_units`, as many as a table holds).
    cap: usize,
    min_minutes: u32,
}

impl Memory<'_> {
    /// Keeps an evicted unit's band, as a restart keeps it, when it is one
    /// that could stand in for the unit's history.
    fn keep(&mut self, unit: UnitKey, band: Option<BandMemory>, minute: u64) {
        let Some(band) = band.filter(|b| b.usable(minute, self.min_minutes)) else {
            return;
        };
        if self.bands.len() >= self.cap && !self.bands.contains_key(&unit) {
            return;
        }
        *self.until = (*self.until).max(band.learned_minute.saturating_add(BAND_MEMORY_MINUTES));
        self.bands.insert(unit, band);
    }
}

/// Forgets a tenth of a full table, closing their episodes: the units
/// with the least traffic in their history window, the least recently
/// active first among equals. Least recently active alone, a source
/// spraying new prefixes (an IPv6 /48 holds 256 of them) or install ids
/// at the start of each minute outranked every busy unit that had not yet
/// sent in it, and a busy unit forgotten is a young one again, held to the
/// floor: its next minute an episode, a trust penalty, a 429. A forgotten
/// unit's band is remembered as across a restart (a unit sending again
/// after a quiet spell may be among the least active), so back at its
/// usual rate it is judged by it.
fn evict(
    table: &mut HashMap<UnitKey, UnitState>,
    episodes: &mut EpisodeLog,
    memory: &mut Memory<'_>,
    minute: u64,
) {
    let key = |state: &UnitState| (state.weight(), state.last_active_minute());
    let mut keys: Vec<(u64, u64)> = table.values().map(key).collect();
    if keys.is_empty() {
        return;
    }
    let n = (keys.len() / 10).max(1);
    let (_, cut, _) = keys.select_nth_unstable(n - 1);
    let cut = *cut;
    let mut budget = n;
    table.retain(|unit, state| {
        if budget > 0 && key(state) <= cut {
            budget -= 1;
            if let Some(id) = state.episode {
                episodes.close(id, minute);
            }
            memory.keep(unit.clone(), state.memory, minute);
            false
        } else {
            true
        }
    });
}

#[cfg(test)]
mod tests;
