//! Range tables of `start,end,asn,org`, the form public ASN tables ship in.

use std::net::IpAddr;

use lineprobe_shared::Catalog;

use super::csvtable::{CsvFormat, CsvSource, check_range, records};
use super::{IpFacts, asn_from_text, carrier_of, hosting_type};
use crate::Error;

/// A `start,end,asn,org` table in memory; lookups are one binary search.
pub type RangesSource = CsvSource<RangesFormat>;

/// The `start,end,asn,org` layout. A first row whose first field is not an
/// address is taken as a header. The ASN may be written `4134`, `AS4134` or
/// `AS 4134`,
/// and may be empty.
#[derive(Debug)]
pub struct RangesFormat;

impl CsvFormat for RangesFormat {
    fn configure(builder: &mut csv::ReaderBuilder) {
        // The header is optional: told apart from data by its first field
        // (after any comment lines, which are not records).
        builder.has_headers(false);
    }

    fn rows(
        csv: &mut csv::Reader<&[u8]>,
        text: &[u8],
        catalog: &Catalog,
        err: &dyn Fn(u64, String) -> Error,
    ) -> Result<Vec<(IpAddr, IpAddr, IpFacts)>, Error> {
        let mut rows = Vec::new();
        for (n, record) in records(csv, text, err).enumerate() {
            let (line, record) = record?;
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
            let asn = if asn_text.trim().is_empty() {
                None
            } else {
                Some(asn_from_text(asn_text).ok_or_else(|| {
                    err(
                        line,
                        format!("`{asn_text}` is not an AS number like 4134 or AS4134"),
                    )
                })?)
            };
            let org = record.get(3).filter(|o| !o.is_empty()).map(str::to_owned);
            let carrier = carrier_of(catalog, asn, org.as_deref().as_slice());
            let facts = IpFacts {
                ip_type: hosting_type(catalog, asn, carrier.as_ref()),
                carrier,
                asn,
                org,
                ..IpFacts::default()
            };
            rows.push((lo, hi, facts));
        }
        Ok(rows)
    }
}
