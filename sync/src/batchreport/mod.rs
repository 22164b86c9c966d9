//! Batch compliance reports: `lineprobe-sync report` and the reports the
//! daemon writes on its schedule.
//!
//! A report covers one period — a day, an ISO week or a month in the
//! configured UTC offset (default `+08:00`) — and says how many lines were
//! observed, their verdicts and compliance rate by carrier, province and
//! city, which lines are non-compliant, violating IP or proxy-suspected
//! (with the evidence), why reports were quarantined, how active the probes
//! were, and how all that changed since the previous period. The
//! definitions are written into every report ([`DEFINITIONS`]).
//!
//! The same figures go out as JSON (one document), CSV (one file per table,
//! see [`csv_tables`]), HTML (one self-contained page with inline SVG
//! charts) and an Excel workbook (a sheet per table, typed cells: the form
//! for spreadsheets). Files hold only the period and the data — no time of
//! writing — so writing a period again gives byte-identical files (and a
//! file whose bytes would not change is not touched). `--catch-up`, and the
//! daemon's schedule, write every complete period after the newest one
//! already in the report folder; the daemon also writes a period again
//! when it wrote it while reports received in it were still pending or not
//! yet pulled from every collector, until they are. Such a
//! period's report has a `.unsettled` file beside it saying why
//! ([`unsettled_name`]), so a restarted daemon still writes it again.

mod csvfiles;
mod figures;
mod files;
mod html;
mod period;
mod settings;
mod tables;
mod xlsx;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, FixedOffset, NaiveDate, TimeDelta, Utc};
use lineprobe_shared::Catalog;

pub use csvfiles::{CSV_MARKER, csv_tables};
pub use figures::{
    Activity, CarrierPair, Change, CollectorActivity, CollectorBehind, DEFINITIONS, GroupFigures,
    LISTED_VERDICTS, ListedLine, ListedReason, Named, PULLED_PAST_END_MARGIN_MS, PeriodFigures,
    PeriodInfo, Place, ProbeActivity, QuarantineFigures, REPORT_FORMAT, REPORT_KIND, ReasonCount,
    Summary, Trend, TrendPoint, VERDICTS, VerdictCounts, build_figures, collectors_behind,
    period_figures,
};
pub use files::{
    FILE_PREFIX, FileOutcome, file_stem, marker_name, unsettled_name, unsettled_periods,
    written_periods,
};
pub use html::{HTML_MAX_LISTED, html};
pub use period::{Period, PeriodKind, parse_utc_offset, period_at};
pub use settings::{ReportConfig, ReportFormat, ReportSchedule, ReportSettings};

use crate::{Error, Store, SyncConfig};

/// `lineprobe-sync report`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// The period a report covers.
    #[arg(long, value_enum, default_value_t = PeriodKind::Day)]
    pub period: PeriodKind,
    /// The period containing this day (YYYY-MM-DD), time (RFC 3339) or named by this label
    /// (2026-W47, 2026-11); default: the last complete period.
    #[arg(long, value_name = "DATE", conflicts_with = "catch_up")]
    pub at: Option<String>,
    /// Formats to write, comma separated: csv, json, html, xlsx (default: `report.formats` of
    /// the configuration, all four).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LIST")]
    pub format: Vec<ReportFormat>,
    /// Folder to write to (default: `report.out_dir` of the configuration, `reports`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Write every complete period after the newest one already in the folder (only the last
    /// complete period when there is none).
    #[arg(long)]
    pub catch_up: bool,
    /// Take this time (RFC 3339, or a day: its midnight in `report.utc_offset`) as now: which
    /// periods are complete, and which are due.
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
}

/// One file of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// Where it is.
    pub path: PathBuf,
    /// Whether its contents changed (a file already holding the same bytes
    /// is left alone).
    pub outcome: FileOutcome,
}

/// The files of one period's report.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenReport {
    /// The period.
    pub period: Period,
    /// Its files, in the order written.
    pub files: Vec<WrittenFile>,
    /// Reports received in the period that were still pending.
    pub pending: u64,
    /// Configured collectors not yet pulled past the period's end.
    pub behind: Vec<String>,
}

impl WrittenReport {
    /// Whether the report may still change: reports received in its period
    /// were pending, or not yet pulled from a collector.
    pub fn unsettled(&self) -> bool {
        self.pending > 0 || !self.behind.is_empty()
    }
}

/// The files of a period's report in `formats`: (file name, contents), in
/// the order they are written (each format's marker file last of its
/// format).
pub fn render(
    figures: &PeriodFigures,
    period: &Period,
    formats: &[ReportFormat],
) -> Result<Vec<(String, Vec<u8>)>, Error> {
    Ok(render_formats(figures, *period, formats)?
        .into_iter()
        .map(|(_, name, bytes)| (name, bytes))
        .collect())
}

/// [`render`], each file with its format.
fn render_formats(
    figures: &PeriodFigures,
    period: Period,
    formats: &[ReportFormat],
) -> Result<Vec<(ReportFormat, String, Vec<u8>)>, Error> {
    let stem = file_stem(&period);
    let mut out = Vec::new();
    for format in settings::normalise_formats(formats) {
        match format {
            ReportFormat::Csv => {
                for (table, bytes) in csv_tables(figures)? {
                    out.push((format, format!("{stem}-{table}.csv"), bytes));
                }
            }
            ReportFormat::Json => {
                let mut bytes =
                    serde_json::to_vec_pretty(figures).map_err(|e| Error::Output(e.into()))?;
                bytes.push(b'\n');
                out.push((format, format!("{stem}.json"), bytes));
            }
            ReportFormat::Html => {
                out.push((format, format!("{stem}.html"), html(figures).into_bytes()));
            }
            ReportFormat::Xlsx => {
                let bytes = xlsx::workbook(figures, period.start())?;
                out.push((format, format!("{stem}.xlsx"), bytes));
            }
        }
    }
    Ok(out)
}

/// Works out and writes the report of `period`.
pub async fn write_report(
    store: &Store,
    catalog: &Catalog,
    settings: &ReportSettings,
    period: Period,
) -> Result<WrittenReport, Error> {
    let report = write_period(store, catalog, settings, period).await?;
    if report.pending > 0 {
        tracing::warn!(
            period = %period,
            pending = report.pending,
            "reports received in the period are still pending: the report changes once they \
             are processed (run `lineprobe-sync process`, then write it again)"
        );
    }
    if !report.behind.is_empty() {
        tracing::warn!(
            period = %period,
            collectors = %report.behind.join(", "),
            "collectors not yet pulled past the period's end: reports they received late in \
             it may be missing, and the report changes once they are pulled (run \
             `lineprobe-sync pull --once`, then write it again)"
        );
    }
    Ok(report)
}

/// [`write_report`] without its warning about pending reports.
async fn write_period(
    store: &Store,
    catalog: &Catalog,
    settings: &ReportSettings,
    period: Period,
) -> Result<WrittenReport, Error> {
    let mut figures = period_figures(store, catalog, period, settings.offset).await?;
    figures.collectors_behind = collectors_behind(
        period,
        settings.offset,
        &settings.collectors,
        &store.cursors().await?,
    );
    let dir = &settings.out_dir;
    files::create_dir(dir)?;
    let rendered = render_formats(&figures, period, &settings.formats)?;
    // The unsettled marker goes before the files it speaks for and away
    // after them: a write cut short never leaves an unsettled report
    // unmarked, which a restarted daemon would take as final.
    let unsettled = unsettled_note(&figures);
    let unsettled_marker = unsettled_name(&period);
    if let Some(note) = &unsettled
        && !files::holds(dir, &unsettled_marker, note.as_bytes())
    {
        files::replace_file(dir, &unsettled_marker, note.as_bytes())?;
    }
    let mut changed: Vec<bool> = rendered
        .iter()
        .map(|(_, name, bytes)| !files::holds(dir, name, bytes))
        .collect();
    // A format of several files (the CSV tables) is marked written by its
    // last file. When any of its files is to change, the marker goes first
    // and is written again last: a rewrite cut short (a crash, a file that
    // cannot be replaced) leaves the period unmarked, never marked over
    // tables of two runs.
    for format in settings::normalise_formats(&settings.formats) {
        let own = || {
            rendered
                .iter()
                .zip(&changed)
                .filter(move |((f, _, _), _)| *f == format)
        };
        if own().count() > 1 && own().any(|(_, changed)| *changed) {
            let marker = marker_name(&period, format);
            files::remove_marker(dir, &marker)?;
            for ((_, name, _), changed) in rendered.iter().zip(changed.iter_mut()) {
                if *name == marker {
                    *changed = true;
                }
            }
        }
    }
    let mut written = Vec::new();
    for ((_, name, bytes), changed) in rendered.into_iter().zip(changed) {
        let outcome = if changed {
            files::replace_file(dir, &name, &bytes)?;
            FileOutcome::Written
        } else {
            FileOutcome::Unchanged
        };
        written.push(WrittenFile {
            path: dir.join(name),
            outcome,
        });
    }
    if unsettled.is_none() {
        files::remove_marker(dir, &unsettled_marker)?;
    }
    Ok(WrittenReport {
        period,
        files: written,
        pending: figures.summary.reports_pending,
        behind: figures
            .collectors_behind
            .iter()
            .map(|c| c.collector.clone())
            .collect(),
    })
}

/// What a period's `.unsettled` file says: why its report may still change
/// (`None` when it may not).
fn unsettled_note(figures: &PeriodFigures) -> Option<String> {
    let pending = figures.summary.reports_pending;
    let behind = &figures.collectors_behind;
    if pending == 0 && behind.is_empty() {
        return None;
    }
    let mut note = String::from(
        "This period's report may still change; `lineprobe-sync run` writes it again until it \
         cannot (or run `lineprobe-sync report --at` for the period again).\n",
    );
    if pending > 0 {
        let _ = writeln!(
            note,
            "{pending} report(s) received in the period were still pending (not yet processed)."
        );
    }
    for c in behind {
        let _ = match &c.pulled_through {
            Some(at) => writeln!(
                note,
                "Collector {} was not yet pulled past the period's end (last pulled to its end \
                 by the round of {at}).",
                c.collector
            ),
            None => writeln!(
                note,
                "Collector {} was not yet pulled past the period's end (never pulled to its end).",
                c.collector
            ),
        };
    }
    Some(note)
}

/// The periods catch-up writes to bring the folder up to `target`: every
/// period after the newest one written there (all formats present), up to
/// and including `target`; only `target` when none is written; none when
/// `target` is written or an even later one is.
pub fn periods_to_catch_up(
    settings: &ReportSettings,
    target: Period,
) -> Result<Vec<Period>, Error> {
    let written = written_periods(&settings.out_dir, target.kind(), &settings.formats)?;
    Ok(match written.last() {
        None => vec![target],
        Some(newest) => newest.next().through(target),
    })
}

/// Writes the reports of `periods`, in order, showing progress on a
/// terminal.
pub async fn write_reports(
    store: &Store,
    catalog: &Catalog,
    settings: &ReportSettings,
    periods: &[Period],
    progress: &Progress,
) -> Result<Vec<WrittenReport>, Error> {
    progress.start(periods.len());
    let mut out = Vec::with_capacity(periods.len());
    for period in periods {
        progress.message(&period.to_string());
        let report = write_report(store, catalog, settings, *period).await?;
        let changed = report
            .files
            .iter()
            .filter(|f| f.outcome == FileOutcome::Written)
            .count();
        tracing::debug!(
            period = %period,
            files = report.files.len(),
            changed,
            folder = %settings.out_dir.display(),
            "report written"
        );
        out.push(report);
        progress.step();
    }
    progress.finish();
    if let (Some(first), Some(last)) = (out.first(), out.last()) {
        let changed = out
            .iter()
            .flat_map(|r| &r.files)
            .filter(|f| f.outcome == FileOutcome::Written)
            .count();
        tracing::info!(
            reports = out.len(),
            first = %first.period,
            last = %last.period,
            files_changed = changed,
            folder = %settings.out_dir.display(),
            "reports written"
        );
    }
    Ok(out)
}

/// A progress bar on standard error when it is a terminal; nothing
/// otherwise (logs and pipes stay free of control sequences).
#[derive(Debug)]
pub struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    /// A bar when standard error is a terminal.
    pub fn on_terminal() -> Self {
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stderr(),
            );
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix("reports");
            Self(Some(bar))
        } else {
            Self(None)
        }
    }

    /// No progress shown.
    pub fn hidden() -> Self {
        Self(None)
    }

    fn start(&self, len: usize) {
        if let Some(bar) = &self.0 {
            bar.set_length(u64::try_from(len).unwrap_or(u64::MAX));
            bar.set_position(0);
        }
    }

    fn message(&self, text: &str) {
        if let Some(bar) = &self.0 {
            bar.set_message(text.to_owned());
        }
    }

    fn step(&self) {
        if let Some(bar) = &self.0 {
            bar.inc(1);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// `lineprobe-sync report`: writes the asked period's report (or catches
/// up) and prints each file with what happened to it.
pub async fn report_command(
    config: &SyncConfig,
    store: &Store,
    args: &ReportArgs,
    stdout: &mut dyn Write,
) -> Result<(), Error> {
    let mut settings = ReportSettings::from_config(config)?;
    if let Some(out) = &args.out {
        settings.out_dir.clone_from(out);
    }
    if !args.format.is_empty() {
        settings.formats = settings::normalise_formats(&args.format);
    }
    let now = match &args.now {
        Some(text) => parse_now(text, settings.offset)?,
        None => Utc::now(),
    };
    let kind = args.period;
    let last_complete = Period::last_complete(kind, now, settings.offset);
    let periods = if args.catch_up {
        periods_to_catch_up(&settings, last_complete)?
    } else {
        let period = match &args.at {
            Some(at) => period_at(kind, at, settings.offset)?,
            None => last_complete,
        };
        if !period.is_complete(now, settings.offset) {
            return Err(Error::Config {
                key: "--at".to_owned(),
                reason: format!(
                    "{period} is not over until {}: its report would still change; ask for a \
                     complete period (the last one is {})",
                    period.ends_at(settings.offset).to_rfc3339(),
                    last_complete.label()
                ),
            });
        }
        vec![period]
    };
    let catalog = config.catalog()?;
    if periods.is_empty() {
        writeln!(
            stdout,
            "up to date: the {kind} report of {} (the last complete {kind}) is in {}",
            last_complete.label(),
            settings.out_dir.display()
        )
        .map_err(Error::Output)?;
        return Ok(());
    }
    let reports = write_reports(
        store,
        &catalog,
        &settings,
        &periods,
        &Progress::on_terminal(),
    )
    .await?;
    for report in &reports {
        for file in &report.files {
            let what = match file.outcome {
                FileOutcome::Written => "written",
                FileOutcome::Unchanged => "unchanged",
            };
            writeln!(stdout, "{what}\t{}", file.path.display()).map_err(Error::Output)?;
        }
    }
    Ok(())
}

/// `--now`: an RFC 3339 time, or a day: its midnight in the reports'
/// `offset`, where its periods start (at midnight UTC, a day west of UTC
/// was taken as the evening before, and its report as not over).
fn parse_now(text: &str, offset: FixedOffset) -> Result<DateTime<Utc>, Error> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.to_utc());
    }
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .ok()
        .map(|d| Period::day_start(d, offset).to_utc())
        .ok_or_else(|| Error::Config {
            key: "--now".to_owned(),
            reason: format!(
                "{text:?} is not a time: write RFC 3339, e.g. 2026-11-22T01:30:00+08:00"
            ),
        })
}

/// When the scheduler looks at an unsettled period again: the next round
/// after its report changed (reports are coming in), then after a wait that
/// doubles each time nothing changed, from [`RECHECK_FIRST_WAIT`] up to
/// [`RECHECK_MAX_WAIT`]. A period's figures cost a scan of its reports, and
/// while a collector is down every period since is unsettled: recomputing
/// them all every round would load the database for nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Recheck {
    /// Not before this.
    at: DateTime<Utc>,
    /// The wait that led here (zero after a change).
    wait: TimeDelta,
}

/// The first wait after a look at an unsettled period changed nothing.
pub const RECHECK_FIRST_WAIT: TimeDelta = TimeDelta::minutes(1);
/// The longest wait between looks at an unsettled period: once what it
/// waited for arrives, its report is written again within this.
pub const RECHECK_MAX_WAIT: TimeDelta = TimeDelta::hours(1);

impl Recheck {
    /// At the next round from `now` on.
    fn at_once(now: DateTime<Utc>) -> Self {
        Self {
            at: now,
            wait: TimeDelta::zero(),
        }
    }

    /// After a look at `now` that changed nothing: the wait doubled.
    fn after_unchanged(self, now: DateTime<Utc>) -> Self {
        let wait = (self.wait * 2).clamp(RECHECK_FIRST_WAIT, RECHECK_MAX_WAIT);
        Self {
            at: now + wait,
            wait,
        }
    }
}

/// The reports `lineprobe-sync run` writes by itself (`report.schedule`).
#[derive(Debug, Clone)]
pub struct ReportScheduler {
    settings: ReportSettings,
    entries: Vec<(PeriodKind, chrono::NaiveTime)>,
    catalog: Arc<Catalog>,
    /// Periods written while reports received in them were still pending
    /// or not yet pulled from every collector, with when each is looked at
    /// again: written again until neither is so (their reports say they
    /// change). After a restart, [`Self::run_due`]'s first round finds them
    /// by their `.unsettled` files.
    unsettled: Arc<Mutex<BTreeMap<Period, Recheck>>>,
    /// Whether the first round has looked at the periods written before.
    resumed: Arc<std::sync::atomic::AtomicBool>,
}

impl ReportScheduler {
    /// The scheduler of the configuration; `None` when nothing is
    /// scheduled.
    pub fn from_config(config: &SyncConfig) -> Result<Option<Self>, Error> {
        let entries = settings::schedule(&config.report)?;
        if entries.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            settings: ReportSettings::from_config(config)?,
            entries,
            catalog: config.catalog()?,
            unsettled: Arc::default(),
            resumed: Arc::default(),
        }))
    }

    /// The latest period of `kind` due at `now`, when its report is due
    /// from `at` on the first day of the period after it.
    pub fn due_period(
        &self,
        kind: PeriodKind,
        at: chrono::NaiveTime,
        now: DateTime<Utc>,
    ) -> Period {
        let offset = self.settings.offset;
        let current = Period::containing_instant(kind, now, offset);
        let due_from = current
            .start()
            .and_time(at)
            .and_local_timezone(offset)
            .single();
        match due_from {
            Some(due) if now >= due => current.previous(),
            _ => current.previous().previous(),
        }
    }

    /// Writes every scheduled report due at `now` that is not in the
    /// folder yet, with catch-up, and again each one written while reports
    /// received in its period were pending, until none is (returned when
    /// its files changed; looked at less often while it does not change,
    /// see [`RECHECK_MAX_WAIT`]).
    pub async fn run_due(
        &self,
        store: &Store,
        now: DateTime<Utc>,
    ) -> Result<Vec<WrittenReport>, Error> {
        let mut out = Vec::new();
        if !self.resumed.swap(true, std::sync::atomic::Ordering::AcqRel) {
            // A restart forgot which periods were unsettled: their
            // `.unsettled` files say. The newest period written of each
            // kind is looked at too, for a folder written before those
            // files were (an unchanged, settled report is not touched).
            for (kind, _) in &self.entries {
                let folder = files::PeriodFiles::read(&self.settings.out_dir, *kind)?;
                let newest = folder.written(&self.settings.formats).last().copied();
                let mut unsettled = self.unsettled();
                for period in folder.unsettled().into_iter().chain(newest) {
                    unsettled.insert(period, Recheck::at_once(now));
                }
            }
        }
        // A period's report compares it with the period before, so when an
        // unsettled period's files change, the report of the period after it
        // (when written already) is written again too.
        let mut queue: VecDeque<Period> = self
            .unsettled()
            .iter()
            .filter(|(_, recheck)| recheck.at <= now)
            .map(|(period, _)| *period)
            .collect();
        let mut looked_at = BTreeSet::new();
        while let Some(period) = queue.pop_front() {
            if !looked_at.insert(period) {
                continue;
            }
            let report = write_period(store, &self.catalog, &self.settings, period).await?;
            let changed = report
                .files
                .iter()
                .any(|f| f.outcome == FileOutcome::Written);
            if report.unsettled() {
                let mut unsettled = self.unsettled();
                let recheck = match unsettled.get(&period) {
                    Some(before) if !changed => before.after_unchanged(now),
                    _ => Recheck::at_once(now),
                };
                unsettled.insert(period, recheck);
            } else if self.unsettled().remove(&period).is_some() && changed {
                tracing::info!(
                    period = %period,
                    folder = %self.settings.out_dir.display(),
                    "report written again: every report received in the period is pulled \
                     and processed"
                );
            }
            if changed {
                let next = period.next();
                if files::is_written(&self.settings.out_dir, next, &self.settings.formats) {
                    queue.push_back(next);
                }
                out.push(report);
            }
        }
        for (kind, at) in &self.entries {
            let target = self.due_period(*kind, *at, now);
            let periods = periods_to_catch_up(&self.settings, target)?;
            if periods.is_empty() {
                continue;
            }
            let written = write_reports(
                store,
                &self.catalog,
                &self.settings,
                &periods,
                &Progress::hidden(),
            )
            .await?;
            self.unsettled().extend(
                written
                    .iter()
                    .filter(|r| r.unsettled())
                    .map(|r| (r.period, Recheck::at_once(now))),
            );
            out.extend(written);
        }
        Ok(out)
    }

    fn unsettled(&self) -> std::sync::MutexGuard<'_, BTreeMap<Period, Recheck>> {
        self.unsettled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// One round of the daemon: writes what is due now; a failure is
    /// logged and tried again next round.
    pub async fn tick(&self, store: &Store) {
        if let Err(e) = self.run_due(store, Utc::now()).await {
            tracing::error!(error = %e, "scheduled report failed; trying again next round");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_unsettled_period_is_looked_at_less_and_less_often() {
        let now = DateTime::parse_from_rfc3339("2026-11-22T01:30:00Z")
            .unwrap()
            .to_utc();
        let mut recheck = Recheck::at_once(now);
        assert_eq!(recheck.at, now);
        let mut waits = Vec::new();
        for _ in 0..9 {
            recheck = recheck.after_unchanged(recheck.at);
            waits.push(recheck.wait.num_minutes());
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(
            recheck.at,
            now + TimeDelta::minutes(1 + 2 + 4 + 8 + 16 + 32 + 180)
        );
    }

    #[test]
    fn a_day_given_as_now_is_its_midnight_in_the_offset() {
        let offset = parse_utc_offset("-05:00").unwrap();
        let now = parse_now("2026-11-22", offset).unwrap();
        assert_eq!(now.to_rfc3339(), "2026-11-22T05:00:00+00:00");
        // The 21st is over at midnight of the 22nd.
        assert_eq!(
            Period::last_complete(PeriodKind::Day, now, offset).label(),
            "2026-11-21"
        );
        let cst = parse_utc_offset("+08:00").unwrap();
        let now = parse_now("2026-11-22", cst).unwrap();
        assert_eq!(now.to_rfc3339(), "2026-11-21T16:00:00+00:00");
        assert!(parse_now("2026-11-22T01:30:00+08:00", offset).is_ok());
        let err = parse_now("tomorrow", cst).unwrap_err();
        assert!(err.to_string().contains("--now"), "{err}");
    }
}
