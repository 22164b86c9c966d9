//! The report folder: file names, which periods are written already, and
//! writes that never leave a half-written file behind.
//!
//! A period's files share the stem `lineprobe-report-{kind}-{label}`:
//! `.json`, `.html`, `.xlsx`, and the CSV tables `-{table}.csv`. A format of
//! a period counts as written when its marker file is there: the `.json`,
//! the `.html`, the `.xlsx`, or `-summary.csv` (the CSV table written last). A rewrite that
//! changes any CSV table takes `-summary.csv` away first, so one cut short
//! leaves the period unmarked rather than marked over tables of two runs.
//!
//! A period whose report may still change (reports received in it were
//! pending, or a collector was not yet pulled past its end) has one more
//! file, `{stem}.unsettled`, saying why: written before the report's files
//! and taken away after a settled report's, so the daemon finds every
//! period it still has to write again after a restart, and an operator
//! sees which reports are not final.

use std::collections::{BTreeSet, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::csvfiles::CSV_MARKER;
use super::period::{Period, PeriodKind};
use super::settings::ReportFormat;
use crate::Error;

/// The start of every report file's name.
pub const FILE_PREFIX: &str = "lineprobe-report";

/// `lineprobe-report-day-2026-11-21`.
pub fn file_stem(period: &Period) -> String {
    format!("{FILE_PREFIX}-{}-{}", period.kind(), period.label())
}

/// The file whose presence marks `format` of `period` as written.
pub fn marker_name(period: &Period, format: ReportFormat) -> String {
    let stem = file_stem(period);
    match format {
        ReportFormat::Json => format!("{stem}.json"),
        ReportFormat::Html => format!("{stem}.html"),
        ReportFormat::Csv => format!("{stem}-{CSV_MARKER}.csv"),
        ReportFormat::Xlsx => format!("{stem}.xlsx"),
    }
}

/// The file whose presence marks `period`'s report as unsettled: it may
/// still change, and the daemon writes it again until it does not.
pub fn unsettled_name(period: &Period) -> String {
    format!("{}.unsettled", file_stem(period))
}

/// The periods of `kind` whose every format in `formats` is written in
/// `dir` (none when `dir` does not exist).
pub fn written_periods(
    dir: &Path,
    kind: PeriodKind,
    formats: &[ReportFormat],
) -> Result<BTreeSet<Period>, Error> {
    Ok(PeriodFiles::read(dir, kind)?.written(formats))
}

/// The periods of `kind` marked unsettled in `dir` ([`unsettled_name`]).
pub fn unsettled_periods(dir: &Path, kind: PeriodKind) -> Result<BTreeSet<Period>, Error> {
    Ok(PeriodFiles::read(dir, kind)?.unsettled())
}

/// Whether every format in `formats` of `period` is written in `dir` (its
/// marker files are there), without listing the folder.
pub(super) fn is_written(dir: &Path, period: Period, formats: &[ReportFormat]) -> bool {
    formats
        .iter()
        .all(|f| dir.join(marker_name(&period, *f)).is_file())
}

/// One listing of the report folder: the names of its files, and the
/// periods of one kind some file is named for.
pub(super) struct PeriodFiles {
    names: HashSet<String>,
    candidates: BTreeSet<Period>,
}

impl PeriodFiles {
    /// Lists `dir` for periods of `kind` (nothing when `dir` does not
    /// exist).
    pub(super) fn read(dir: &Path, kind: PeriodKind) -> Result<Self, Error> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    names: HashSet::new(),
                    candidates: BTreeSet::new(),
                });
            }
            Err(source) => {
                return Err(Error::ReportFile {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        };
        let prefix = format!("{FILE_PREFIX}-{kind}-");
        let mut names = HashSet::new();
        let mut candidates = BTreeSet::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::ReportFile {
                path: dir.to_path_buf(),
                source,
            })?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if let Some(period) = name
                .strip_prefix(&prefix)
                .and_then(|rest| rest.get(..kind.label_len()))
                .and_then(|label| Period::parse_label(kind, label))
            {
                candidates.insert(period);
            }
            names.insert(name);
        }
        Ok(Self { names, candidates })
    }

    /// The periods whose every format in `formats` is written.
    pub(super) fn written(&self, formats: &[ReportFormat]) -> BTreeSet<Period> {
        self.candidates
            .iter()
            .filter(|p| {
                formats
                    .iter()
                    .all(|f| self.names.contains(&marker_name(p, *f)))
            })
            .copied()
            .collect()
    }

    /// The periods marked unsettled.
    pub(super) fn unsettled(&self) -> BTreeSet<Period> {
        self.candidates
            .iter()
            .filter(|p| self.names.contains(&unsettled_name(p)))
            .copied()
            .collect()
    }
}

/// What writing one batch-report file did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOutcome {
    /// The file was created or its contents replaced.
    Written,
    /// The file already held exactly these bytes; it was left alone.
    Unchanged,
}

/// Writes `bytes` to `dir/name`: through a temporary file renamed into
/// place, so the file is either the old one or the whole new one. A file
/// that already holds these bytes is not touched. (A report's files are
/// written by [`super::write_report`], which first takes a marker away.)
#[cfg(test)]
pub(super) fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<FileOutcome, Error> {
    if holds(dir, name, bytes) {
        return Ok(FileOutcome::Unchanged);
    }
    replace_file(dir, name, bytes)?;
    Ok(FileOutcome::Written)
}

/// Whether `dir/name` already holds exactly `bytes` (a file of another
/// length is not read).
pub(super) fn holds(dir: &Path, name: &str, bytes: &[u8]) -> bool {
    let path = dir.join(name);
    std::fs::metadata(&path)
        .is_ok_and(|m| m.is_file() && u64::try_from(bytes.len()).is_ok_and(|n| n == m.len()))
        && std::fs::read(&path).is_ok_and(|old| old == bytes)
}

/// Takes a format's marker file away (when it is there), durably: a
/// format written in several files is rewritten unmarked, so a rewrite cut
/// short leaves no marker over files of two runs.
pub(super) fn remove_marker(dir: &Path, name: &str) -> Result<(), Error> {
    let path = dir.join(name);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            lineprobe_shared::sync_dir(dir).map_err(|source| Error::ReportFile { path, source })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::ReportFile { path, source }),
    }
}

/// Writes `bytes` to `dir/name` through a temporary file renamed into
/// place, so the file is either the old one or the whole new one.
pub(super) fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), Error> {
    let path = dir.join(name);
    let file_error = |path: &PathBuf| {
        let path = path.clone();
        move |source| Error::ReportFile { path, source }
    };
    // Starts with a dot: never taken for a report by `written_periods`.
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        // A leftover of a run that died keeps its old mode: start afresh.
        let _ = std::fs::remove_file(&temp);
        let mut file = create_private(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, &path)?;
        // The marker written after the reports must not outlive them in a
        // crash: a period whose marker is there is never written again.
        lineprobe_shared::sync_dir(dir)
    })();
    if let Err(source) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(file_error(&path)(source));
    }
    Ok(())
}

/// A new report file, readable and writable by its owner only: the line
/// tables name subscribers' accounts. Each write makes a new file, so a
/// rewrite keeps the mode however the umask is set.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Creates the report folder (and its parents) when needed; a folder it
/// creates is its owner's only.
pub(super) fn create_dir(dir: &Path) -> Result<(), Error> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| Error::ReportFile {
        path: dir.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    #[test]
    fn a_period_counts_as_written_when_every_format_marker_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let day = |s| {
            Period::containing(
                PeriodKind::Day,
                NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap(),
            )
        };
        let touch = |name: &str| std::fs::write(dir.path().join(name), b"x").unwrap();
        touch("lineprobe-report-day-2026-11-20.json");
        touch("lineprobe-report-day-2026-11-20.html");
        touch("lineprobe-report-day-2026-11-20-summary.csv");
        touch("lineprobe-report-day-2026-11-21.json");
        touch("lineprobe-report-day-2026-11-21-by-city.csv");
        touch("lineprobe-report-week-2026-W47.json");
        touch("lineprobe-report-day-2026-13-01.json");
        touch(".lineprobe-report-day-2026-11-22.json.1.tmp");
        touch("lineprobe-report-day-2026-11-23.unsettled");
        touch("lineprobe-report-day-2026-11-21.unsettled");
        touch("lineprobe-report-week-2026-W47.unsettled");
        let all = [ReportFormat::Csv, ReportFormat::Json, ReportFormat::Html];
        let written = written_periods(dir.path(), PeriodKind::Day, &all).unwrap();
        assert_eq!(written.into_iter().collect::<Vec<_>>(), [day("2026-11-20")]);
        let json = written_periods(dir.path(), PeriodKind::Day, &[ReportFormat::Json]).unwrap();
        assert_eq!(
            json.into_iter().collect::<Vec<_>>(),
            [day("2026-11-20"), day("2026-11-21")]
        );
        let weeks = written_periods(dir.path(), PeriodKind::Week, &[ReportFormat::Json]).unwrap();
        assert_eq!(weeks.len(), 1);
        // An unsettled marker marks nothing as written, and is found by
        // kind (whether or not the report's files are there).
        let unsettled = unsettled_periods(dir.path(), PeriodKind::Day).unwrap();
        assert_eq!(
            unsettled.into_iter().collect::<Vec<_>>(),
            [day("2026-11-21"), day("2026-11-23")]
        );
        assert_eq!(
            unsettled_periods(dir.path(), PeriodKind::Week)
                .unwrap()
                .len(),
            1
        );
        assert!(
            unsettled_periods(&dir.path().join("absent"), PeriodKind::Day)
                .unwrap()
                .is_empty()
        );
        assert!(
            written_periods(&dir.path().join("absent"), PeriodKind::Day, &all)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn an_identical_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            write_file(dir.path(), "a.json", b"{}").unwrap(),
            FileOutcome::Written
        );
        assert_eq!(
            write_file(dir.path(), "a.json", b"{}").unwrap(),
            FileOutcome::Unchanged
        );
        assert_eq!(
            write_file(dir.path(), "a.json", b"[]").unwrap(),
            FileOutcome::Written
        );
        assert_eq!(std::fs::read(dir.path().join("a.json")).unwrap(), b"[]");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");
    }

    /// Report files name subscribers' accounts: their owner's only, the
    /// folder too, and a rewrite keeps it so (a file an operator opened up,
    /// or a leftover temporary file, does not pass its mode on).
    #[cfg(unix)]
    #[test]
    fn report_files_and_their_folder_are_their_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("reports").join("daily");
        create_dir(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);

        let name = "lineprobe-report-day-2026-11-20-listed-lines.csv";
        assert!(matches!(
            write_file(&dir, name, b"a").unwrap(),
            FileOutcome::Written
        ));
        assert_eq!(mode(&dir.join(name)), 0o600);
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o644)).unwrap();
        let leftover = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        std::fs::write(&leftover, b"old").unwrap();
        std::fs::set_permissions(&leftover, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            write_file(&dir, name, b"b").unwrap(),
            FileOutcome::Written
        ));
        assert_eq!(mode(&dir.join(name)), 0o600);
        assert_eq!(std::fs::read(dir.join(name)).unwrap(), b"b");
        assert!(!leftover.exists());
    }
}
