//! The `[report]` section of the sync configuration: where reports go, in
//! which formats, the UTC offset their periods are taken in, and which
//! reports `lineprobe-sync run` writes by itself.

use std::path::PathBuf;

use chrono::{FixedOffset, NaiveTime};
use serde::{Deserialize, Serialize};

use super::period::{PeriodKind, parse_time_of_day, parse_utc_offset};
use crate::{Error, SyncConfig};

/// A report file format.
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
pub enum ReportFormat {
    /// CSV tables, one file each.
    Csv,
    /// One JSON document.
    Json,
    /// One self-contained HTML page.
    Html,
    /// One Excel workbook, a sheet per table (typed cells: for
    /// spreadsheets).
    Xlsx,
}

/// `[report]`: the batch compliance reports.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportConfig {
    /// Folder the report files go to (relative paths are taken from the
    /// configuration file's folder); `--out` overrides it.
    pub out_dir: PathBuf,
    /// Formats written; `--format` overrides them.
    pub formats: Vec<ReportFormat>,
    /// The UTC offset days, weeks and months are taken in (`+08:00`: China
    /// Standard Time, which has no daylight saving).
    pub utc_offset: String,
    /// Reports `lineprobe-sync run` writes by itself, each with catch-up:
    /// every period missed since the last one written.
    pub schedule: Vec<ReportSchedule>,
}

impl Default for ReportConfig {
    fn default() -> Self {
        Self {
            out_dir: PathBuf::from("reports"),
            formats: vec![
                ReportFormat::Csv,
                ReportFormat::Json,
                ReportFormat::Html,
                ReportFormat::Xlsx,
            ],
            utc_offset: "+08:00".to_owned(),
            schedule: Vec::new(),
        }
    }
}

/// One scheduled report: `{ period = "day", at = "01:30" }` writes the
/// report of each day once the next day has reached 01:30 (a week's on its
/// following Monday, a month's on the 1st of the next).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSchedule {
    /// `day`, `week` or `month`.
    pub period: PeriodKind,
    /// The time of day (`HH:MM`, in `utc_offset`) on the first day of the
    /// next period from which the report is due. Default `01:00`, leaving
    /// the puller time to bring in the reports received before midnight.
    #[serde(default = "default_at")]
    pub at: String,
}

fn default_at() -> String {
    "01:00".to_owned()
}

impl ReportConfig {
    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |key: &str, reason: String| Error::Config {
            key: format!("report.{key}"),
            reason,
        };
        self.offset().map_err(|reason| bad("utc_offset", reason))?;
        if self.formats.is_empty() {
            return Err(bad(
                "formats",
                "names no format: list one or more of \"csv\", \"json\", \"html\", \"xlsx\""
                    .to_owned(),
            ));
        }
        if self.out_dir.as_os_str().is_empty() {
            return Err(bad(
                "out_dir",
                "is empty: name the folder reports are written to".to_owned(),
            ));
        }
        let mut kinds = std::collections::BTreeSet::new();
        for (i, entry) in self.schedule.iter().enumerate() {
            parse_time_of_day(&entry.at)
                .map_err(|reason| bad(&format!("schedule[{i}].at"), reason))?;
            if !kinds.insert(entry.period) {
                return Err(bad(
                    &format!("schedule[{i}].period"),
                    format!(
                        "{} is scheduled twice: keep one entry per period",
                        entry.period
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The UTC offset.
    pub fn offset(&self) -> Result<FixedOffset, String> {
        parse_utc_offset(&self.utc_offset)
    }
}

/// Where and how reports are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportSettings {
    /// The report folder.
    pub out_dir: PathBuf,
    /// The formats, each once, in the order csv, json, html, xlsx.
    pub formats: Vec<ReportFormat>,
    /// The UTC offset periods are taken in.
    pub offset: FixedOffset,
    /// The configured collectors: a report says which of them were not
    /// pulled past its period's end yet.
    pub collectors: Vec<String>,
}

impl ReportSettings {
    /// The settings of the configuration's `[report]` section.
    pub fn from_config(config: &SyncConfig) -> Result<Self, Error> {
        let report = &config.report;
        report.validate()?;
        let offset = report.offset().map_err(|reason| Error::Config {
            key: "report.utc_offset".to_owned(),
            reason,
        })?;
        Ok(Self {
            out_dir: config.resolve_path(&report.out_dir),
            formats: normalise_formats(&report.formats),
            offset,
            collectors: config.collectors.iter().map(|c| c.name.clone()).collect(),
        })
    }
}

/// The formats each once, in a fixed order.
pub(super) fn normalise_formats(formats: &[ReportFormat]) -> Vec<ReportFormat> {
    let mut out = formats.to_vec();
    out.sort_unstable();
    out.dedup();
    out
}

/// The scheduled reports, their times parsed.
pub(super) fn schedule(config: &ReportConfig) -> Result<Vec<(PeriodKind, NaiveTime)>, Error> {
    config
        .schedule
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            parse_time_of_day(&entry.at)
                .map(|at| (entry.period, at))
                .map_err(|reason| Error::Config {
                    key: format!("report.schedule[{i}].at"),
                    reason,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_section_reads_and_checks() {
        let config = SyncConfig::from_toml_with_env(
            "[report]\nout_dir = \"/var/lib/lineprobe/reports\"\nformats = [\"html\", \"csv\"]\n\
             utc_offset = \"+08:00\"\nschedule = [{ period = \"day\", at = \"01:30\" }, \
             { period = \"month\" }]\n",
            "test",
            [],
        )
        .unwrap();
        config.validate().unwrap();
        let r = &config.report;
        assert_eq!(r.formats, [ReportFormat::Html, ReportFormat::Csv]);
        let times = schedule(r).unwrap();
        assert_eq!(
            times,
            [
                (PeriodKind::Day, NaiveTime::from_hms_opt(1, 30, 0).unwrap()),
                (PeriodKind::Month, NaiveTime::from_hms_opt(1, 0, 0).unwrap()),
            ]
        );
        let settings = ReportSettings::from_config(&config).unwrap();
        assert_eq!(settings.formats, [ReportFormat::Csv, ReportFormat::Html]);
        assert_eq!(settings.offset.local_minus_utc(), 8 * 3600);

        let defaults = SyncConfig::from_toml_with_env("", "test", []).unwrap();
        assert_eq!(defaults.report, ReportConfig::default());

        for (toml, key) in [
            (
                "[report]\nutc_offset = \"Asia/Shanghai\"\n",
                "report.utc_offset",
            ),
            ("[report]\nformats = []\n", "report.formats"),
            (
                "[report]\nschedule = [{ period = \"day\", at = \"1h30\" }]\n",
                "report.schedule[0].at",
            ),
            (
                "[report]\nschedule = [{ period = \"day\" }, { period = \"day\", at = \"02:00\" }]\n",
                "report.schedule[1].period",
            ),
        ] {
            let config = SyncConfig::from_toml_with_env(toml, "test", []).unwrap();
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{toml}: {error}");
        }
        for toml in [
            "[report]\nformat = [\"csv\"]\n",
            "[report]\nformats = [\"pdf\"]\n",
            "[report]\nschedule = [{ period = \"year\" }]\n",
            "[report]\nschedule = [{ period = \"day\", cron = \"* * *\" }]\n",
        ] {
            assert!(
                SyncConfig::from_toml_with_env(toml, "test", []).is_err(),
                "{toml}"
            );
        }
    }

    #[test]
    fn the_example_configuration_documents_a_valid_section() {
        let text = include_str!("../../../config/sync.example.toml");
        let config = SyncConfig::from_toml_with_env(text, "sync.example.toml", []).unwrap();
        config.report.validate().unwrap();
        assert_eq!(config.report, ReportConfig::default());
        // The commented schedule example, uncommented.
        let start = text.find("# schedule = [").unwrap();
        let end = start + text[start..].find("# ]").unwrap() + 3;
        let example: String = text[start..end]
            .lines()
            .map(|l| l.trim_start_matches('#').split("  #").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let config =
            SyncConfig::from_toml_with_env(&format!("[report]\n{example}\n"), "example", [])
                .unwrap();
        config.report.validate().unwrap();
        assert_eq!(schedule(&config.report).unwrap().len(), 3);
    }
}
