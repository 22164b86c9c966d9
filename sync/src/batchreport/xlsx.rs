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
use rust_xlsxwriter::{DocProperties, ExcelDateTime, Workbook, Worksheet, XlsxError};

use super::figures::PeriodFigures;
use super::tables::{SUMMARY, Table, tables};
use crate::Error;
use crate::spreadsheet::{XLSX_MAX_ROWS, XlsxFormats, fit_columns};

/// The workbook of a report on the period starting `first_day`.
pub(super) fn workbook(f: &PeriodFigures, first_day: NaiveDate) -> Result<Vec<u8>, Error> {
    render(&tables(f), first_day, XLSX_MAX_ROWS).map_err(xlsx_error)
}

/// The workbook of `tables`, each sheet of at most `max_rows` rows.
fn render(tables: &[Table], first_day: NaiveDate, max_rows: u32) -> Result<Vec<u8>, XlsxError> {
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
    let formats = XlsxFormats::default();
    let ordered = tables
        .iter()
        .filter(|t| t.name == SUMMARY)
        .chain(tables.iter().filter(|t| t.name != SUMMARY));
    for table in ordered {
        let sheet = book.add_worksheet();
        sheet.set_name(table.name)?;
        write_table(sheet, table, &formats, max_rows)?;
    }
    book.save_to_buffer()
}

fn write_table(
    sheet: &mut Worksheet,
    table: &Table,
    formats: &XlsxFormats,
    max_rows: u32,
) -> Result<(), XlsxError> {
    formats.header(sheet, &table.header)?;
    // The header, the rows that fit, and a row saying what did not.
    let fits = max_rows - 2;
    for (r, row) in (1..=fits).zip(&table.rows) {
        formats.row(sheet, r, row)?;
    }
    let left = table.rows.len().saturating_sub(fits as usize);
    if left > 0 {
        let note =
            format!("{left} more rows than a sheet holds: see the CSV or JSON form of this report");
        sheet.write_string(fits + 1, 0, note)?;
    }
    fit_columns(sheet);
    Ok(())
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
    use crate::spreadsheet::Cell;

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
        let bytes = render(&[table(6)], day, 5).expect("rendered");
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
            render(&[table(6)], day, 5).expect("rendered"),
            render(&[table(6)], day, 5).expect("rendered")
        );
    }
}
