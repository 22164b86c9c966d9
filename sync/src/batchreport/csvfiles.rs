//! The CSV form of a report: one file per table ([`super::tables`]),
//! `{stem}-{table}.csv`, UTF-8 without a byte-order mark (spreadsheets that
//! take CSV for the local code page show Chinese names garbled: the Excel
//! form, [`super::xlsx`], is for them). Text that starts like a formula is
//! defused ([`Cell::csv`]).
//!
//! `-summary.csv` is written last: when it is there, so are the others.

use super::figures::PeriodFigures;
use super::tables::{Cell, SUMMARY, Table, tables};
use crate::Error;

/// The suffix of the CSV file written last; its presence marks the CSV form
/// of a period as written.
pub const CSV_MARKER: &str = SUMMARY;

/// Every CSV table of a report: (file suffix without `.csv`, contents), the
/// marker table last.
pub fn csv_tables(f: &PeriodFigures) -> Result<Vec<(&'static str, Vec<u8>)>, Error> {
    tables(f)
        .iter()
        .map(|t| Ok((t.name, csv_table(t)?)))
        .collect()
}

fn csv_table(table: &Table) -> Result<Vec<u8>, Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(&table.header).map_err(csv_error)?;
    for row in &table.rows {
        writer
            .write_record(row.iter().map(Cell::csv))
            .map_err(csv_error)?;
    }
    writer
        .into_inner()
        .map_err(|e| Error::Output(std::io::Error::other(e.to_string())))
}

fn csv_error(e: csv::Error) -> Error {
    Error::Output(std::io::Error::other(e))
}
