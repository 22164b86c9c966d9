//! The Excel form of a report: one workbook, `{stem}.xlsx`, a sheet per
//! table ([`super::tables`]), the summary first.
//!
//! It is the form for spreadsheets: cells are typed, so an account such as
//! `02081230606` stays text with its leading zero (a CSV file opened in a
//! spreadsheet turns it into a number), text is never run as a formula
//! whatever it starts with (no apostrophe is added, as the CSV form must),
//! Chinese names show as written (no code page guessed), counts are numbers
//! and rates are percentages. The workbook's creation time is the period's
//! first day, so that writing a period again gives the same bytes.

use chrono::{Datelike as _, NaiveDate};
use rust_xlsxwriter::{DocProperties, ExcelDateTime, Format, Workbook, Worksheet, XlsxError};

use super::figures::PeriodFigures;
use super::tables::{Cell, SUMMARY, Table, tables};
use crate::Error;

/// The most characters a cell holds (Excel's own limit).
const MAX_CELL_CHARS: usize = 32_767;
/// The most rows a sheet holds (Excel's own limit), the header among them.
const MAX_ROWS: usize = 1_048_576;
/// The widest a column is made to fit its contents, in pixels (long
/// sentences and evidence stay readable in their cells without a column
/// wider than a screen).
const MAX_COLUMN_PIXELS: u32 = 400;

/// The workbook of a report on the period starting `first_day`.
pub(super) fn workbook(f: &PeriodFigures, first_day: NaiveDate) -> Result<Vec<u8>, Error> {
    render(&tables(f), first_day).map_err(xlsx_error)
}

fn render(tables: &[Table], first_day: NaiveDate) -> Result<Vec<u8>, XlsxError> {
    render_within(tables, first_day, MAX_ROWS)
}

/// [`render`] with sheets of at most `max_rows` rows.
fn render_within(
    tables: &[Table],
    first_day: NaiveDate,
    max_rows: usize,
) -> Result<Vec<u8>, XlsxError> {
    let mut book = Workbook::new();
    let created = ExcelDateTime::from_ymd(
        u16::try_from(first_day.year()).unwrap_or(1900),
        u8::try_from(first_day.month()).unwrap_or(1),
        u8::try_from(first_day.day()).unwrap_or(1),
    )?;
    book.set_properties(
        &DocProperties::new()
            .set_title("LineProbe compliance report")
            .set_creation_datetime(&created),
    );
    let header = Format::new().set_bold();
    let rate = Format::new().set_num_format("0.00%");
    let ordered = tables
        .iter()
        .filter(|t| t.name == SUMMARY)
        .chain(tables.iter().filter(|t| t.name != SUMMARY));
    for table in ordered {
        let sheet = book.add_worksheet();
        sheet.set_name(table.name)?;
        write_table(sheet, table, &header, &rate, max_rows)?;
    }
    book.save_to_buffer()
}

fn write_table(
    sheet: &mut Worksheet,
    table: &Table,
    header: &Format,
    rate: &Format,
    max_rows: usize,
) -> Result<(), XlsxError> {
    for (c, name) in (0_u16..).zip(&table.header) {
        sheet.write_string_with_format(0, c, *name, header)?;
    }
    // The header, the rows that fit, and a row saying what did not.
    let fits = max_rows - 2;
    for (r, row) in (1_u32..).zip(table.rows.iter().take(fits)) {
        for (c, cell) in (0_u16..).zip(row) {
            match cell {
                Cell::Text(s) if s.is_empty() => {}
                Cell::Text(s) => {
                    sheet.write_string(r, c, clip(s))?;
                }
                // Counts are far below 2^53: exact as a double.
                #[allow(clippy::cast_precision_loss, reason = "counts below 2^53")]
                Cell::Int(n) => {
                    sheet.write_number(r, c, *n as f64)?;
                }
                Cell::Rate(Some(x)) => {
                    sheet.write_number_with_format(r, c, *x, rate)?;
                }
                Cell::Rate(None) => {}
            }
        }
    }
    if table.rows.len() > fits {
        let note = format!(
            "{} more rows than a sheet holds: see the CSV or JSON form of this report",
            table.rows.len() - fits
        );
        sheet.write_string(u32::try_from(fits + 1).unwrap_or(u32::MAX), 0, note)?;
    }
    sheet.set_freeze_panes(1, 0)?;
    sheet.set_autofit_max_width(MAX_COLUMN_PIXELS);
    sheet.autofit();
    Ok(())
}

/// `s` cut to what a cell holds, saying so.
fn clip(s: &str) -> std::borrow::Cow<'_, str> {
    const MORE: &str = "… (cut: see the JSON form)";
    if s.chars().count() <= MAX_CELL_CHARS {
        return s.into();
    }
    let keep = MAX_CELL_CHARS - MORE.chars().count();
    let mut out: String = s.chars().take(keep).collect();
    out.push_str(MORE);
    out.into()
}

fn xlsx_error(e: XlsxError) -> Error {
    Error::Output(std::io::Error::other(XlsxFailed(e)))
}

/// Why the workbook could not be made, with its cause.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the Excel workbook")]
struct XlsxFailed(#[source] XlsxError);

#[cfg(test)]
mod tests {
    use calamine::{Data, Reader as _};

    use super::*;

    fn table(rows: usize) -> Table {
        Table::for_test(
            "listed-lines",
            &["account", "reports", "compliance_rate"],
            (0..rows)
                .map(|i| {
                    vec![
                        Cell::Text(format!("0{i}")),
                        Cell::Int(i128::try_from(i).unwrap_or(0) - 1),
                        Cell::Rate((i % 2 == 0).then_some(0.5)),
                    ]
                })
                .collect(),
        )
    }

    fn read(bytes: Vec<u8>, sheet: &str) -> Vec<Vec<Data>> {
        let mut book: calamine::Xlsx<_> =
            calamine::open_workbook_from_rs(std::io::Cursor::new(bytes)).expect("a workbook");
        let range = book.worksheet_range(sheet).expect("the sheet");
        range.rows().map(<[Data]>::to_vec).collect()
    }

    #[test]
    fn cells_keep_their_types_and_rows_past_a_sheet_are_told() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 21).expect("a day");
        let bytes = render_within(&[table(6)], day, 5).expect("rendered");
        let rows = read(bytes, "listed-lines");
        assert_eq!(rows.len(), 5, "{rows:?}");
        let text = |s: &str| Data::String(s.to_owned());
        assert_eq!(rows[0][..2], [text("period"), text("account")]);
        assert_eq!(
            rows[1][..4],
            [
                text("2026-11-21"),
                text("00"),
                Data::Float(-1.0),
                Data::Float(0.5)
            ]
        );
        assert_eq!(rows[2][3], Data::Empty, "no rate");
        assert_eq!(
            rows[4][0],
            text("3 more rows than a sheet holds: see the CSV or JSON form of this report")
        );
        // The same tables give the same bytes.
        assert_eq!(
            render_within(&[table(6)], day, 5).expect("rendered"),
            render_within(&[table(6)], day, 5).expect("rendered")
        );
    }

    #[test]
    fn text_longer_than_a_cell_is_cut_and_says_so() {
        let long = "证".repeat(MAX_CELL_CHARS + 10);
        let cut = clip(&long);
        assert_eq!(cut.chars().count(), MAX_CELL_CHARS);
        assert!(cut.ends_with("(cut: see the JSON form)"));
        assert_eq!(clip("短"), "短");
    }
}
