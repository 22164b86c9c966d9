//! Range tables of `start,end,asn,org`, the form public ASN tables ship in.

use std::io::Read;
use std::net::IpAddr;
use std::path::Path;

use lineprobe_shared::Catalog;

use super::ipplan::check_range;
use super::{IpFacts, IpSource, RangeTable, carrier_of, hosting_type, open_data_file};
use crate::Error;

/// A `start,end,asn,org` table in memory; lookups are one binary search.
#[derive(Debug, Clone)]
pub struct RangesSource {
    name: String,
    version: String,
    table: RangeTable<IpFacts>,
}

impl RangesSource {
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

    /// Loads a table from `reader`; `what` names it in error messages. A
    /// first row whose first field is not an address is taken as a header.
    /// The ASN may be written `4134` or `AS4134`, and may be empty.
    pub fn from_reader(
        name: impl Into<String>,
        version: impl Into<String>,
        what: &str,
        reader: impl Read,
        catalog: &Catalog,
    ) -> Result<Self, Error> {
        let err = |line: u64, message: String| Error::SourceData {
            what: format!("{what}:{line}"),
            message,
        };
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(reader);
        let mut rows = Vec::new();
        for (n, record) in csv.records().enumerate() {
            let record = record.map_err(|e| {
                let line = e.position().map_or(0, csv::Position::line);
                err(line, e.to_string())
            })?;
            let line = record.position().map_or(0, csv::Position::line);
            let first = record.get(0).unwrap_or("").trim_start_matches('\u{feff}');
            if first.is_empty() || first.starts_with('#') {
                continue;
            }
            let Ok(lo) = first.parse::<IpAddr>() else {
                if n == 0 {
                    continue; // the header
                }
                return Err(err(line, format!("`{first}` (start) is not an IP address")));
            };
            let last = record.get(1).unwrap_or("");
            let hi: IpAddr = last
                .parse()
                .map_err(|_| err(line, format!("`{last}` (end) is not an IP address")))?;
            check_range(lo, hi).map_err(|m| err(line, m))?;
            let asn_text = record.get(2).unwrap_or("");
            let digits = asn_text
                .strip_prefix("AS")
                .or_else(|| asn_text.strip_prefix("as"))
                .unwrap_or(asn_text);
            let asn = if digits.is_empty() {
                None
            } else {
                Some(digits.parse::<u32>().map_err(|_| {
                    err(
                        line,
                        format!("`{asn_text}` is not an AS number like 4134 or AS4134"),
                    )
                })?)
            };
            let org = record.get(3).filter(|o| !o.is_empty()).map(str::to_owned);
            let carrier = carrier_of(catalog, asn, org.as_deref().as_slice());
            let facts = IpFacts {
                ip_type: hosting_type(catalog, carrier.as_ref()),
                carrier,
                asn,
                org,
                ..IpFacts::default()
            };
            rows.push((lo, hi, facts));
        }
        Ok(Self {
            name: name.into(),
            version: version.into(),
            table: RangeTable::build(rows),
        })
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl IpSource for RangesSource {
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
