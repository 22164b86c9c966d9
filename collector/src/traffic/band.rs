//! The expected band of a unit's per-minute request count, from robust
//! statistics of its recent minutes: the median and the median absolute
//! deviation (MAD). One flood minute moves neither, unlike a mean and a
//! standard deviation, so a flood cannot teach the band to accept itself
//! within a few minutes.

/// MAD times this estimates the standard deviation of normal data.
const MAD_TO_SIGMA: f64 = 1.4826;

/// What is normal for one unit in one minute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Band {
    /// The median request count per minute.
    pub median: f64,
    /// The spread one "MAD" stands for (scaled MAD, with floors).
    pub scale: f64,
    /// Counts above this are anomalous.
    pub upper: f64,
}

/// The parameters of a band.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BandRules {
    /// Scaled MADs above the median where the band ends.
    pub mads: f64,
    /// Counts at or below this are never anomalous.
    pub floor: f64,
}

impl Band {
    /// The band of `counts` (one per minute, quiet minutes as 0).
    ///
    /// The scale never drops below 1 request, nor below a tenth of the
    /// median: a perfectly regular unit (MAD 0) must not turn its first
    /// extra request into an anomaly of infinite degree.
    pub fn learn(counts: &mut [f64], rules: BandRules) -> Self {
        let median = median(counts);
        for c in counts.iter_mut() {
            *c = (*c - median).abs();
        }
        let mad = median_of(counts);
        let scale = (mad * MAD_TO_SIGMA).max(1.0).max(median * 0.1);
        Self {
            median,
            scale,
            upper: (median + rules.mads * scale).max(rules.floor),
        }
    }

    /// The wider of two bands (a young unit is held to its own band and the
    /// node's norm, whichever allows more).
    #[must_use]
    pub fn widest(self, other: Self) -> Self {
        if other.upper > self.upper {
            other
        } else {
            self
        }
    }

    /// Whether `count` is outside the band.
    pub fn is_anomalous(&self, count: f64) -> bool {
        count > self.upper
    }

    /// How many scales above the median `count` is (0 at or below it).
    pub fn degree(&self, count: f64) -> f64 {
        ((count - self.median) / self.scale).max(0.0)
    }
}

/// A unit's own band as remembered across restarts (with its trust row in
/// the staging store): after a restart the monitor knows nothing else of
/// the unit's traffic, and a unit busier than the floor would otherwise be
/// judged against the floor and open false episodes (see
/// `Traffic::band_for`).
///
/// Only a band the monitor used alone is remembered: one learned from at
/// least `traffic.min_history_minutes` of the unit's own traffic, whose
/// anomalous minutes were clipped to their band. So it says no more than
/// the unit's real traffic taught, as the band in memory does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BandMemory {
    /// The median request count per minute.
    pub median: f64,
    /// The spread one "MAD" stands for.
    pub scale: f64,
    /// The minutes of history it was learned from.
    pub minutes: u32,
    /// The minute it was learned for (minutes since the Unix epoch).
    pub learned_minute: u64,
}

/// A path unit's band as remembered across restarts (the staging store's
/// `path_bands`): a path pattern has no trust score, so no trust row to
/// keep its band with as a source prefix or an installation has. The same
/// rules hold: only a band learned from at least
/// `traffic.min_history_minutes` of the path's own traffic is used, and
/// none older than a day.
#[derive(Debug, Clone, PartialEq)]
pub struct PathBand {
    /// The path pattern as configured (`public.paths`).
    pub pattern: String,
    /// Its band.
    pub band: BandMemory,
}

/// How long a remembered band stands in for a unit's history, in minutes:
/// a day, the cycle of a unit's traffic, so that a band learned at its
/// busiest hour is used at that hour again but not kept for ever. Older
/// ones are ignored (the unit is judged as a new one).
pub(crate) const BAND_MEMORY_MINUTES: u64 = 24 * 60;

impl BandMemory {
    /// A band to remember, `None` when it is no band this monitor could
    /// have learned (not finite, negative, a scale below 1 request; a row
    /// edited by hand).
    pub fn new(median: f64, scale: f64, minutes: u32, learned_minute: u64) -> Option<Self> {
        let valid = median.is_finite() && median >= 0.0 && scale.is_finite() && scale >= 1.0;
        valid.then_some(Self {
            median,
            scale,
            minutes,
            learned_minute,
        })
    }

    /// What `band` learned from `minutes` of history at `minute` leaves to
    /// remember.
    pub(crate) fn of(band: Band, minutes: u64, minute: u64) -> Self {
        Self {
            median: band.median,
            scale: band.scale,
            minutes: u32::try_from(minutes).unwrap_or(u32::MAX),
            learned_minute: minute,
        }
    }

    /// Whether it may still stand in for the unit's history in `minute`
    /// and was learned from at least `min_minutes` of it.
    pub(crate) fn usable(&self, minute: u64, min_minutes: u32) -> bool {
        self.minutes >= min_minutes
            && minute.saturating_sub(self.learned_minute) <= BAND_MEMORY_MINUTES
    }

    /// The band under `rules` (the edge is recomputed: the configuration
    /// may have changed since it was learned).
    pub fn band(&self, rules: BandRules) -> Band {
        Band {
            median: self.median,
            scale: self.scale,
            upper: (self.median + rules.mads * self.scale).max(rules.floor),
        }
    }
}

/// The median of `values` (0 when empty); sorts them.
pub(crate) fn median(values: &mut [f64]) -> f64 {
    median_of(values)
}

fn median_of(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    let upper = values.get(mid).copied().unwrap_or(0.0);
    if values.len() % 2 == 1 {
        upper
    } else {
        let lower = values.get(mid - 1).copied().unwrap_or(0.0);
        f64::midpoint(lower, upper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: BandRules = BandRules {
        mads: 6.0,
        floor: 20.0,
    };

    #[test]
    fn median_of_odd_and_even_and_empty() {
        assert!((median(&mut [3.0, 1.0, 2.0]) - 2.0).abs() < 1e-9);
        assert!((median(&mut [4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < 1e-9);
        assert!(median(&mut []).abs() < 1e-9);
    }

    #[test]
    fn a_quiet_units_small_burst_is_within_the_floor() {
        // One report an hour: median 0, MAD 0.
        let mut counts = vec![0.0; 59];
        counts.push(1.0);
        let band = Band::learn(&mut counts, RULES);
        assert!(band.median.abs() < 1e-9);
        assert!((band.scale - 1.0).abs() < 1e-9, "{band:?}");
        assert!(!band.is_anomalous(20.0), "retries after an outage");
        assert!(band.is_anomalous(21.0));
        assert!((band.degree(21.0) - 21.0).abs() < 1e-9);
    }

    #[test]
    fn a_busy_units_band_follows_its_spread() {
        // A NAT'd /24 with ~100 ± 10 requests a minute.
        let mut counts: Vec<f64> = (0..60).map(|i| 90.0 + f64::from(i % 21)).collect();
        let band = Band::learn(&mut counts, RULES);
        assert!((band.median - 100.0).abs() <= 1.0, "{band:?}");
        assert!(band.scale > 5.0 && band.scale < 20.0, "{band:?}");
        assert!(!band.is_anomalous(130.0));
        assert!(band.is_anomalous(1000.0));
        assert!(band.degree(1000.0) > 50.0);
    }

    #[test]
    fn one_flood_minute_does_not_move_the_band() {
        let mut quiet: Vec<f64> = (0..60).map(|i| f64::from(i % 3)).collect();
        let before = Band::learn(&mut quiet.clone(), RULES);
        quiet[10] = 100_000.0;
        let after = Band::learn(&mut quiet, RULES);
        assert!((before.upper - after.upper).abs() < 1e-9);
    }

    #[test]
    fn a_remembered_band_is_used_only_if_recent_and_learned_from_enough() {
        let m = BandMemory::new(600.0, 60.0, 60, 1_000).expect("valid");
        let band = m.band(RULES);
        assert!((band.upper - 960.0).abs() < 1e-9, "{band:?}");
        // Its edge follows the rules of today, not of when it was learned.
        let strict = m.band(BandRules {
            mads: 3.0,
            floor: 1_000.0,
        });
        assert!((strict.upper - 1_000.0).abs() < 1e-9, "{strict:?}");
        assert!(m.usable(1_000 + BAND_MEMORY_MINUTES, 10));
        assert!(!m.usable(1_001 + BAND_MEMORY_MINUTES, 10), "too old");
        assert!(!m.usable(1_010, 61), "learned from too few minutes");
        assert!(m.usable(900, 10), "a clock stepped back");
        for (median, scale) in [
            (f64::NAN, 1.0),
            (-1.0, 1.0),
            (5.0, 0.5),
            (5.0, f64::INFINITY),
        ] {
            assert_eq!(BandMemory::new(median, scale, 60, 0), None);
        }
    }

    #[test]
    fn the_wider_band_wins() {
        let narrow = Band {
            median: 0.0,
            scale: 1.0,
            upper: 20.0,
        };
        let wide = Band {
            median: 50.0,
            scale: 5.0,
            upper: 80.0,
        };
        assert_eq!(narrow.widest(wide), wide);
        assert_eq!(wide.widest(narrow), wide);
    }
}
