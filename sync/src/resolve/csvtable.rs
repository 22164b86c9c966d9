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
    /// Reads every row of `reader` as an inclusive range with its facts.
    /// `row_error` makes an error naming the file and line.
    fn rows<R: Read>(
        csv: &mut csv::Reader<R>,
        catalog: &Catalog,
        row_error: &dyn Fn(u64, String) -> Error,
    ) -> Result<Vec<(IpAddr, IpAddr, IpFacts)>, Error>;

    /// Sets up the CSV reader for this layout; every layout's reader
    /// already takes rows of any length and trims the fields.
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
        reader: impl Read,
        catalog: &Catalog,
    ) -> Result<Self, Error> {
        let row_error = |line: u64, message: String| Error::SourceData {
            what: format!("{what}:{line}"),
            message,
        };
        let mut builder = csv::ReaderBuilder::new();
        builder.flexible(true).trim(csv::Trim::All);
        F::configure(&mut builder);
        let mut csv = builder.from_reader(reader);
        let rows = F::rows(&mut csv, catalog, &row_error)?;
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

/// The records of `csv`, each with its line; a record that cannot be read
/// is an error naming its line.
pub(crate) fn records<'r, R: Read>(
    csv: &'r mut csv::Reader<R>,
    err: &'r dyn Fn(u64, String) -> Error,
) -> impl Iterator<Item = Result<(u64, csv::StringRecord), Error>> + 'r {
    let line = |p: Option<&csv::Position>| p.map_or(0, csv::Position::line);
    csv.records().map(move |record| {
        record
            .map(|r| (line(r.position()), r))
            .map_err(|e| err(line(e.position()), e.to_string()))
    })
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
