//! An address table read from CSV into memory: what the address plan and the
//! ASN range tables have in common. Each format only turns its rows into
//! ranges with facts; opening the file, naming the data version, the
//! in-memory table and the lookups are here once.

use std::fmt;
use std::io::Read;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::path::Path;

use lineprobe_shared::Catalog;

use super::{IpFacts, IpSource, RangeTable, open_data_file};
use crate::Error;

/// A CSV layout of address ranges with their facts.
pub trait CsvFormat: fmt::Debug + Send + Sync + 'static {
    /// Reads every row of `csv`, a reader over `text`, as an inclusive
    /// range with its facts. `row_error` makes an error naming the file
    /// and line.
    fn rows(
        csv: &mut csv::Reader<&[u8]>,
        text: &[u8],
        catalog: &Catalog,
        row_error: &dyn Fn(u64, String) -> Error,
    ) -> Result<Vec<(IpAddr, IpAddr, IpFacts)>, Error>;

    /// Sets up the CSV reader for this layout; every layout's reader
    /// already takes rows of any length, trims the fields and skips lines
    /// starting with `#`.
    fn configure(builder: &mut csv::ReaderBuilder);
}

/// A CSV address table in memory; lookups are one binary search.
#[derive(Debug)]
pub struct CsvSource<F> {
    name: String,
    version: String,
    table: RangeTable<IpFacts>,
    format: PhantomData<F>,
}

// Derived `Clone` would ask the format marker to be `Clone` too.
impl<F> Clone for CsvSource<F> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            version: self.version.clone(),
            table: self.table.clone(),
            format: PhantomData,
        }
    }
}

impl<F: CsvFormat> CsvSource<F> {
    /// Loads the table at `path`; `version` defaults to the file's date.
    pub fn open(
        name: impl Into<String>,
        version: Option<String>,
        path: &Path,
        catalog: &Catalog,
    ) -> Result<Self, Error> {
        let (file, version) = open_data_file(path, version)?;
        Self::from_reader(name, version, &path.display().to_string(), file, catalog)
    }

    /// Loads a table from `reader`; `what` names it in error messages, with
    /// the line of a row that cannot be used.
    pub fn from_reader(
        name: impl Into<String>,
        version: impl Into<String>,
        what: &str,
        mut reader: impl Read,
        catalog: &Catalog,
    ) -> Result<Self, Error> {
        // The whole table is held in memory anyway; the text is kept while
        // it loads to tell the line of a bad row (see `record_line`).
        let mut text = Vec::new();
        reader
            .read_to_end(&mut text)
            .map_err(|source| Error::Input {
                what: what.to_owned(),
                source,
            })?;
        let row_error = |line: u64, message: String| Error::SourceData {
            what: format!("{what}:{line}"),
            message,
        };
        let mut builder = csv::ReaderBuilder::new();
        builder
            .flexible(true)
            .trim(csv::Trim::All)
            .comment(Some(COMMENT));
        F::configure(&mut builder);
        let mut csv = builder.from_reader(text.as_slice());
        let rows = F::rows(&mut csv, &text, catalog, &row_error)?;
        Ok(Self {
            name: name.into(),
            version: version.into(),
            table: RangeTable::build(rows),
            format: PhantomData,
        })
    }

    /// The number of rows (blocks or ranges) loaded.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<F: CsvFormat> IpSource for CsvSource<F> {
    fn name(&self) -> &str {
        &self.name
    }

    fn data_version(&self) -> &str {
        &self.version
    }

    fn lookup(&self, ip: IpAddr) -> Result<Option<IpFacts>, Error> {
        Ok(self.table.get(ip).cloned())
    }
}

/// The byte that starts a comment line.
const COMMENT: u8 = b'#';

/// The records of `csv`, a reader over `text`, each with its line; a
/// record that cannot be read is an error naming its line.
pub(crate) fn records<'r>(
    csv: &'r mut csv::Reader<&[u8]>,
    text: &'r [u8],
    err: &'r dyn Fn(u64, String) -> Error,
) -> impl Iterator<Item = Result<(u64, csv::StringRecord), Error>> + 'r {
    let line = move |p: Option<&csv::Position>| p.map_or(0, |p| record_line(text, p));
    csv.records().map(move |record| {
        record
            .map(|r| (line(r.position()), r))
            .map_err(|e| err(line(e.position()), e.to_string()))
    })
}

/// The line of the header row of `csv`, a reader over `text`, for an
/// error about it.
pub(crate) fn header_line(csv: &mut csv::Reader<&[u8]>, text: &[u8]) -> u64 {
    let pos = csv.headers().ok().and_then(|h| h.position()).cloned();
    pos.map_or(1, |p| record_line(text, &p))
}

/// The line a record read from `text` starts on. csv gives the position
/// where it began reading the record, before the blank and comment lines
/// it skipped to reach it: an error would name the first of those (a row
/// after a comment block was reported on the comment's first line).
fn record_line(text: &[u8], pos: &csv::Position) -> u64 {
    let mut line = pos.line();
    let start = usize::try_from(pos.byte()).unwrap_or(usize::MAX);
    let mut rest = text.get(start..).unwrap_or_default();
    if start == 0 {
        rest = rest.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(rest);
    }
    // Line numbers count `\n`, as csv's do.
    loop {
        let skipped = match rest.first() {
            // A blank line (`\n`, or `\r` then `\n` the next turn).
            Some(b'\n' | b'\r') => 1,
            Some(&COMMENT) => rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |i| i + 1),
            _ => break,
        };
        let (gone, left) = rest.split_at(skipped);
        line += u64::from(gone.last() == Some(&b'\n'));
        rest = left;
    }
    line
}

/// Both ends in one family, in order.
pub(crate) fn check_range(lo: IpAddr, hi: IpAddr) -> Result<(), String> {
    let (l6, l) = super::key(lo);
    let (h6, h) = super::key(hi);
    if l6 != h6 {
        return Err(format!("{lo} and {hi} are not of the same address family"));
    }
    if l > h {
        return Err(format!("the range starts at {lo} after its end {hi}"));
    }
    Ok(())
}
