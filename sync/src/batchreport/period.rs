//! Report periods: calendar days, ISO weeks (Monday to Sunday) and calendar
//! months, in one fixed UTC offset (China keeps UTC+08:00 all year, with no
//! daylight saving, so a fixed offset is exact there).

use std::fmt;

use chrono::{DateTime, Datelike, Days, FixedOffset, Months, NaiveDate, NaiveTime, Utc, Weekday};
use serde::{Deserialize, Serialize};

use crate::{Error, PeriodWindow};

/// How long a report's period is.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum PeriodKind {
    /// A calendar day.
    Day,
    /// An ISO week, Monday to Sunday.
    Week,
    /// A calendar month.
    Month,
}

impl PeriodKind {
    /// `day`, `week` or `month`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
        }
    }

    /// The length of the label of a period of this kind
    /// (`2026-11-21`, `2026-W47`, `2026-11`).
    pub fn label_len(self) -> usize {
        match self {
            Self::Day => 10,
            Self::Week => 8,
            Self::Month => 7,
        }
    }
}

impl fmt::Display for PeriodKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One period: its kind and its first day (local dates in the report's
/// offset). Periods of one kind order by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    kind: PeriodKind,
    start: NaiveDate,
}

impl Period {
    /// The period of `kind` that contains the day `date`.
    pub fn containing(kind: PeriodKind, date: NaiveDate) -> Self {
        let start = match kind {
            PeriodKind::Day => date,
            PeriodKind::Week => date
                .checked_sub_days(Days::new(u64::from(date.weekday().num_days_from_monday())))
                .unwrap_or(date),
            PeriodKind::Month => date.with_day(1).unwrap_or(date),
        };
        Self { kind, start }
    }

    /// The period of `kind` that contains the instant `at`, in `offset`.
    pub fn containing_instant(kind: PeriodKind, at: DateTime<Utc>, offset: FixedOffset) -> Self {
        Self::containing(kind, at.with_timezone(&offset).date_naive())
    }

    /// The last period of `kind` that is over at `now`: the one before the
    /// period `now` falls in.
    pub fn last_complete(kind: PeriodKind, now: DateTime<Utc>, offset: FixedOffset) -> Self {
        Self::containing_instant(kind, now, offset).previous()
    }

    /// Its kind.
    pub fn kind(&self) -> PeriodKind {
        self.kind
    }

    /// Its first day.
    pub fn start(&self) -> NaiveDate {
        self.start
    }

    /// The first day after it.
    pub fn end(&self) -> NaiveDate {
        match self.kind {
            PeriodKind::Day => self.start.checked_add_days(Days::new(1)),
            PeriodKind::Week => self.start.checked_add_days(Days::new(7)),
            PeriodKind::Month => self.start.checked_add_months(Months::new(1)),
        }
        .unwrap_or(NaiveDate::MAX)
    }

    /// Its last day.
    pub fn last_day(&self) -> NaiveDate {
        self.end().pred_opt().unwrap_or(self.start)
    }

    /// The period after it.
    #[must_use]
    pub fn next(&self) -> Self {
        Self::containing(self.kind, self.end())
    }

    /// The period before it.
    #[must_use]
    pub fn previous(&self) -> Self {
        Self::containing(self.kind, self.start.pred_opt().unwrap_or(self.start))
    }

    /// How many days it has.
    pub fn days(&self) -> u32 {
        let days = (self.end() - self.start).num_days();
        u32::try_from(days).unwrap_or(0)
    }

    /// Its label: `2026-11-21`, `2026-W47` (the ISO week-numbering year and
    /// week) or `2026-11`.
    pub fn label(&self) -> String {
        match self.kind {
            PeriodKind::Day => self.start.format("%Y-%m-%d").to_string(),
            PeriodKind::Week => {
                let week = self.start.iso_week();
                format!("{:04}-W{:02}", week.year(), week.week())
            }
            PeriodKind::Month => self.start.format("%Y-%m").to_string(),
        }
    }

    /// The period of `kind` a label names; `None` unless `text` is exactly
    /// the label [`Period::label`] writes.
    pub fn parse_label(kind: PeriodKind, text: &str) -> Option<Self> {
        let date = match kind {
            PeriodKind::Day => NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?,
            PeriodKind::Week => {
                let (year, week) = text.split_once("-W")?;
                NaiveDate::from_isoywd_opt(year.parse().ok()?, week.parse().ok()?, Weekday::Mon)?
            }
            PeriodKind::Month => {
                let (year, month) = text.split_once('-')?;
                NaiveDate::from_ymd_opt(year.parse().ok()?, month.parse().ok()?, 1)?
            }
        };
        let period = Self::containing(kind, date);
        (period.label() == text).then_some(period)
    }

    /// The first instant of day `date` in `offset`.
    pub fn day_start(date: NaiveDate, offset: FixedOffset) -> DateTime<FixedOffset> {
        date.and_time(NaiveTime::MIN)
            .and_local_timezone(offset)
            .single()
            .unwrap_or_else(|| date.and_time(NaiveTime::MIN).and_utc().fixed_offset())
    }

    /// When it starts, in `offset`.
    pub fn starts_at(&self, offset: FixedOffset) -> DateTime<FixedOffset> {
        Self::day_start(self.start, offset)
    }

    /// When it ends (the first instant after it), in `offset`.
    pub fn ends_at(&self, offset: FixedOffset) -> DateTime<FixedOffset> {
        Self::day_start(self.end(), offset)
    }

    /// Whether it is over at `now`.
    pub fn is_complete(&self, now: DateTime<Utc>, offset: FixedOffset) -> bool {
        self.ends_at(offset) <= now
    }

    /// The length of one trend bucket: an hour for a day, a day otherwise.
    pub fn bucket_ms(&self) -> i64 {
        match self.kind {
            PeriodKind::Day => 3_600_000,
            PeriodKind::Week | PeriodKind::Month => 86_400_000,
        }
    }

    /// How many trend buckets it has: 24 hours, 7 days, or the days of the
    /// month.
    pub fn buckets(&self) -> u32 {
        match self.kind {
            PeriodKind::Day => 24,
            PeriodKind::Week | PeriodKind::Month => self.days(),
        }
    }

    /// Its time window in the database, with its trend buckets.
    pub fn window(&self, offset: FixedOffset) -> PeriodWindow {
        PeriodWindow {
            from_ms: self.starts_at(offset).timestamp_millis(),
            until_ms: self.ends_at(offset).timestamp_millis(),
            bucket_ms: self.bucket_ms(),
        }
    }

    /// Every period of its kind from it up to `last`, both included (empty
    /// when `last` is earlier).
    pub fn through(&self, last: Period) -> Vec<Period> {
        let mut out = Vec::new();
        let mut p = *self;
        while p <= last && p.kind == last.kind {
            out.push(p);
            let next = p.next();
            if next == p {
                break;
            }
            p = next;
        }
        out
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.label())
    }
}

/// A UTC offset written `+08:00`, `-05:30`, `+8` or `Z`.
pub fn parse_utc_offset(text: &str) -> Result<FixedOffset, String> {
    let bad = || {
        format!(
            "{text:?} is not a UTC offset: write it as +HH:MM (China: \"+08:00\"), between \
             -23:59 and +23:59"
        )
    };
    let t = text.trim();
    if t.eq_ignore_ascii_case("z") || t.eq_ignore_ascii_case("utc") {
        return FixedOffset::east_opt(0).ok_or_else(bad);
    }
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(bad()),
    };
    let (hours, minutes) = rest.split_once(':').unwrap_or((rest, "0"));
    let digits = |s: &str| !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(hours) || !digits(minutes) {
        return Err(bad());
    }
    let hours: i32 = hours.parse().map_err(|_| bad())?;
    let minutes: i32 = minutes.parse().map_err(|_| bad())?;
    if hours > 23 || minutes > 59 {
        return Err(bad());
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60)).ok_or_else(bad)
}

/// `--at`: the period of `kind` that contains a day (`YYYY-MM-DD`), a time
/// (RFC 3339) or that a period label names (`2026-W47`, `2026-11`).
pub fn period_at(kind: PeriodKind, text: &str, offset: FixedOffset) -> Result<Period, Error> {
    let t = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(t) {
        return Ok(Period::containing_instant(kind, at.to_utc(), offset));
    }
    if let Ok(date) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(Period::containing(kind, date));
    }
    if let Some(period) = Period::parse_label(kind, t) {
        return Ok(period);
    }
    Err(Error::Config {
        key: "--at".to_owned(),
        reason: format!(
            "{text:?} is not a date: write a day (2026-11-21), a time (2026-11-21T10:00:00+08:00) \
             or a {kind} label ({})",
            Period::containing(
                kind,
                NaiveDate::from_ymd_opt(2026, 11, 21).unwrap_or_default()
            )
            .label()
        ),
    })
}

/// A time of day written `HH:MM`.
pub(super) fn parse_time_of_day(text: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(text.trim(), "%H:%M").map_err(|_| {
        format!("{text:?} is not a time of day: write HH:MM on the 24-hour clock, e.g. \"01:30\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn weeks_start_on_monday_and_use_iso_numbering() {
        // 2026-11-21 is a Saturday.
        let w = Period::containing(PeriodKind::Week, d("2026-11-21"));
        assert_eq!(w.start(), d("2026-11-16"));
        assert_eq!(w.end(), d("2026-11-23"));
        assert_eq!(w.label(), "2026-W47");
        // A Sunday belongs to the week before; a Monday starts its own.
        assert_eq!(
            Period::containing(PeriodKind::Week, d("2026-11-22")).start(),
            d("2026-11-16")
        );
        assert_eq!(
            Period::containing(PeriodKind::Week, d("2026-11-23")).start(),
            d("2026-11-23")
        );
        // Across the year: 2026-01-01 (Thursday) is in 2026-W01, which
        // starts on 2025-12-29; 2027-01-01 (Friday) is in 2026-W53.
        let first = Period::containing(PeriodKind::Week, d("2026-01-01"));
        assert_eq!(first.start(), d("2025-12-29"));
        assert_eq!(first.label(), "2026-W01");
        let last = Period::containing(PeriodKind::Week, d("2027-01-01"));
        assert_eq!(last.label(), "2026-W53");
        assert_eq!(last.next().label(), "2027-W01");
        assert_eq!(last.next().previous(), last);
        assert_eq!(
            Period::parse_label(PeriodKind::Week, "2026-W53"),
            Some(last)
        );
        assert_eq!(Period::parse_label(PeriodKind::Week, "2025-W53"), None);
    }

    #[test]
    fn months_have_their_lengths() {
        let days = |s| Period::containing(PeriodKind::Month, d(s)).days();
        assert_eq!(days("2026-01-31"), 31);
        assert_eq!(days("2026-02-10"), 28);
        assert_eq!(days("2028-02-10"), 29);
        assert_eq!(days("2100-02-01"), 28);
        assert_eq!(days("2000-02-01"), 29);
        assert_eq!(days("2026-04-30"), 30);
        let dec = Period::containing(PeriodKind::Month, d("2026-12-31"));
        assert_eq!(dec.label(), "2026-12");
        assert_eq!(dec.next().label(), "2027-01");
        assert_eq!(dec.next().previous(), dec);
        assert_eq!(dec.buckets(), 31);
        assert_eq!(Period::parse_label(PeriodKind::Month, "2026-12"), Some(dec));
        for bad in ["2026-13", "2026-1", "26-12", "2026-12-01"] {
            assert_eq!(Period::parse_label(PeriodKind::Month, bad), None, "{bad}");
        }
    }

    #[test]
    fn at_picks_the_period_around_a_day_in_the_middle() {
        let cst = parse_utc_offset("+08:00").unwrap();
        let p = period_at(PeriodKind::Week, "2026-11-19", cst).unwrap();
        assert_eq!((p.start(), p.end()), (d("2026-11-16"), d("2026-11-23")));
        let p = period_at(PeriodKind::Month, "2026-02-14", cst).unwrap();
        assert_eq!(p.label(), "2026-02");
        assert_eq!(p.days(), 28);
        // A time is taken in the report's offset: 17:00 UTC is 01:00 the
        // next day in China.
        let p = period_at(PeriodKind::Day, "2026-11-20T17:00:00Z", cst).unwrap();
        assert_eq!(p.label(), "2026-11-21");
        let p = period_at(PeriodKind::Week, "2026-W47", cst).unwrap();
        assert_eq!(p.start(), d("2026-11-16"));
        let error = period_at(PeriodKind::Day, "yesterday", cst).unwrap_err();
        assert!(error.to_string().contains("--at"), "{error}");
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn windows_are_in_the_offset_and_the_last_complete_period_is_over() {
        let cst = parse_utc_offset("+08:00").unwrap();
        let day = Period::containing(PeriodKind::Day, d("2026-11-21"));
        let w = day.window(cst);
        let start = DateTime::parse_from_rfc3339("2026-11-20T16:00:00Z").unwrap();
        assert_eq!(w.from_ms, start.timestamp_millis());
        assert_eq!(w.until_ms - w.from_ms, 86_400_000);
        assert_eq!(w.bucket_ms, 3_600_000);
        // 2026-11-22 00:30 in China is 2026-11-21 16:30 UTC: the last
        // complete day is the 21st, although it is still the 21st in UTC.
        let now = DateTime::parse_from_rfc3339("2026-11-21T16:30:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(Period::last_complete(PeriodKind::Day, now, cst), day);
        assert!(day.is_complete(now, cst));
        assert!(!day.next().is_complete(now, cst));
        assert_eq!(
            Period::last_complete(PeriodKind::Week, now, cst).label(),
            "2026-W46"
        );
        assert_eq!(
            Period::last_complete(PeriodKind::Month, now, cst).label(),
            "2026-10"
        );
        let utc = parse_utc_offset("Z").unwrap();
        assert_eq!(
            Period::last_complete(PeriodKind::Day, now, utc).label(),
            "2026-11-20"
        );
    }

    #[test]
    fn through_lists_each_period_once() {
        let first = Period::containing(PeriodKind::Day, d("2026-02-27"));
        let last = Period::containing(PeriodKind::Day, d("2026-03-02"));
        let labels: Vec<String> = first.through(last).iter().map(Period::label).collect();
        assert_eq!(
            labels,
            ["2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02"]
        );
        assert!(last.through(first).is_empty());
    }

    #[test]
    fn offsets_and_times_of_day_parse_or_say_why_not() {
        assert_eq!(
            parse_utc_offset("+08:00").unwrap().local_minus_utc(),
            8 * 3600
        );
        assert_eq!(parse_utc_offset("+8").unwrap().local_minus_utc(), 8 * 3600);
        assert_eq!(
            parse_utc_offset("-05:30").unwrap().local_minus_utc(),
            -(5 * 3600 + 30 * 60)
        );
        for bad in ["08:00", "+24:00", "+8:60", "Asia/Shanghai", "", "+"] {
            let e = parse_utc_offset(bad).unwrap_err();
            assert!(e.contains("+HH:MM"), "{bad}: {e}");
        }
        assert_eq!(
            parse_time_of_day("01:30").unwrap(),
            NaiveTime::from_hms_opt(1, 30, 0).unwrap()
        );
        assert!(parse_time_of_day("25:00").is_err());
    }
}
