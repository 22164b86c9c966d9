//! Cells of the files that people open in spreadsheets: the back office's
//! lines export, the batch reports' tables and `verdicts --format csv`, as
//! CSV and as Excel workbooks.
//!
//! Much of what these files hold came from subscribers' devices over the
//! internet (accounts, installation ids, declared cities, agent versions).
//! A CSV cell that starts like a formula — `=`, `+`, `-`, `@`, or a tab or
//! carriage return that a spreadsheet skips before one — is run as a formula
//! when the compliance team opens the file in a spreadsheet (CSV injection), so
//! every text cell goes through [`text`]. Numbers the program wrote
//! itself are left alone: a negative change must stay a number. In a
//! workbook every cell has a type: text is written as text, which no
//! spreadsheet runs, and keeps what it starts with (an account's leading
//! zero too).

use chrono::{DateTime, FixedOffset, Timelike as _};
use rust_xlsxwriter::{Format, Worksheet, XlsxError};

/// One typed cell, which each file form writes its own way.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    /// Text, as it is.
    Text(String),
    /// A count, or a change of one (negative).
    Int(i128),
    /// A rate (a fraction: 0.95 is 95 %), or a change of one; `None` when
    /// there is none.
    Rate(Option<f64>),
    /// Yes or no.
    Bool(bool),
    /// An instant, in the offset it is shown in; `None` when unknown.
    Time(Option<DateTime<FixedOffset>>),
}

impl Cell {
    /// A count.
    pub(crate) fn count(n: u64) -> Self {
        Self::Int(i128::from(n))
    }

    /// The cell in a CSV file: text defused ([`text`]), times in RFC 3339
    /// to the second.
    pub(crate) fn csv(&self) -> String {
        match self {
            Self::Text(s) => text(s),
            Self::Int(n) => n.to_string(),
            Self::Rate(r) => r.map(|r| r.to_string()).unwrap_or_default(),
            Self::Bool(b) => b.to_string(),
            Self::Time(t) => t
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false))
                .unwrap_or_default(),
        }
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

/// The most rows a sheet holds (Excel's own limit), its header among them.
pub(crate) const XLSX_MAX_ROWS: u32 = 1_048_576;
/// The most characters a cell holds (Excel's own limit).
const MAX_CELL_CHARS: usize = 32_767;
/// The widest a column is made to fit its contents, in pixels: long
/// sentences and evidence stay readable in their cells without a column
/// wider than a screen.
const MAX_COLUMN_PIXELS: u32 = 400;

/// The formats of a workbook's cells.
pub(crate) struct XlsxFormats {
    header: Format,
    rate: Format,
    time: Format,
}

impl Default for XlsxFormats {
    fn default() -> Self {
        Self {
            header: Format::new().set_bold(),
            rate: Format::new().set_num_format("0.00%"),
            time: Format::new().set_num_format("yyyy-mm-dd hh:mm:ss"),
        }
    }
}

impl XlsxFormats {
    /// Writes the header row (row 0), bold, and keeps it in view.
    pub(crate) fn header(&self, sheet: &mut Worksheet, names: &[&str]) -> Result<(), XlsxError> {
        for (c, name) in (0_u16..).zip(names) {
            sheet.write_string_with_format(0, c, *name, &self.header)?;
        }
        sheet.set_freeze_panes(1, 0)?;
        Ok(())
    }

    /// Writes `cells` as row `row`, each by its type (an empty text, a
    /// missing rate or time, leaves its cell empty).
    pub(crate) fn row(
        &self,
        sheet: &mut Worksheet,
        row: u32,
        cells: &[Cell],
    ) -> Result<(), XlsxError> {
        for (c, cell) in (0_u16..).zip(cells) {
            match cell {
                Cell::Text(s) if s.is_empty() => {}
                Cell::Text(s) => {
                    sheet.write_string(row, c, clip(s))?;
                }
                // Counts are far below 2^53: exact as a double.
                #[allow(clippy::cast_precision_loss, reason = "counts below 2^53")]
                Cell::Int(n) => {
                    sheet.write_number(row, c, *n as f64)?;
                }
                Cell::Rate(Some(x)) => {
                    sheet.write_number_with_format(row, c, *x, &self.rate)?;
                }
                Cell::Bool(b) => {
                    sheet.write_boolean(row, c, *b)?;
                }
                Cell::Time(Some(t)) => {
                    // To the second, as shown and as the CSV form has it.
                    let local = t.naive_local();
                    let second = local.with_nanosecond(0).unwrap_or(local);
                    sheet.write_datetime_with_format(row, c, second, &self.time)?;
                }
                Cell::Rate(None) | Cell::Time(None) => {}
            }
        }
        Ok(())
    }
}

/// Widens the sheet's columns to their contents, up to a screen's share.
pub(crate) fn fit_columns(sheet: &mut Worksheet) {
    sheet.set_autofit_max_width(MAX_COLUMN_PIXELS);
    sheet.autofit();
}

/// `s` cut to what a cell holds, saying so.
pub(crate) fn clip(s: &str) -> std::borrow::Cow<'_, str> {
    const MORE: &str = "… (cut: longer than a cell holds)";
    if s.chars().count() <= MAX_CELL_CHARS {
        return s.into();
    }
    let keep = MAX_CELL_CHARS - MORE.chars().count();
    let mut out: String = s.chars().take(keep).collect();
    out.push_str(MORE);
    out.into()
}

/// `text` as a CSV cell a spreadsheet shows as typed and never runs: with a
/// leading apostrophe when it starts like a formula (spreadsheets hide the
/// apostrophe and keep the rest as text).
pub(crate) fn text(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_starts_like_a_formula_is_defused() {
        for formula in [
            "=HYPERLINK(\"http://x\")",
            "+86",
            "-1+cmd|' /C calc'!A0",
            "@SUM(A1)",
            "\t=1",
            "\r=1",
        ] {
            assert_eq!(text(formula), format!("'{formula}"));
        }
        for plain in ["account:0755", "深圳", "0.1.0", "", "a=b", "install-1"] {
            assert_eq!(text(plain), plain);
        }
    }

    #[test]
    fn text_longer_than_a_cell_is_cut_and_says_so() {
        let long = "证".repeat(MAX_CELL_CHARS + 10);
        let cut = clip(&long);
        assert_eq!(cut.chars().count(), MAX_CELL_CHARS);
        assert!(cut.ends_with("(cut: longer than a cell holds)"));
        assert_eq!(clip("短"), "短");
    }

    #[test]
    fn csv_cells_are_written_by_type() {
        let t = DateTime::parse_from_rfc3339("2026-11-21T09:30:00.250+08:00").ok();
        assert_eq!(Cell::Time(t).csv(), "2026-11-21T09:30:00+08:00");
        assert_eq!(Cell::Int(-3).csv(), "-3");
        assert_eq!(Cell::Rate(Some(0.25)).csv(), "0.25");
        assert_eq!(Cell::Rate(None).csv(), "");
        assert_eq!(Cell::Bool(true).csv(), "true");
        assert_eq!(Cell::from("=1").csv(), "'=1");
    }
}
