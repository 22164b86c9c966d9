//! The carrier's own address plan: a CSV of blocks (CIDR or start–end) with
//! carrier, province, city, IP type and customer.

use std::net::IpAddr;

use ipnet::IpNet;
use lineprobe_shared::Catalog;

use super::csvtable::{CsvFormat, CsvSource, check_range, header_line, records};
use super::{IpFacts, IpType, city_code, province_id};
use crate::Error;

/// The carrier's address plan, loaded into memory; lookups are one binary
/// search.
pub type IpPlanSource = CsvSource<IpPlanFormat>;

/// The address plan's layout.
///
/// The header row is required. Columns: `cidr` or `start,end`; then any of
/// `carrier`, `province`, `city`, `ip_type`, `customer`. Carrier, province,
/// city and IP type must be known to the catalog: an unknown value fails the
/// load with the file, line and valid choices.
#[derive(Debug)]
pub struct IpPlanFormat;

impl CsvFormat for IpPlanFormat {
    fn configure(builder: &mut csv::ReaderBuilder) {
        builder.has_headers(true);
    }

    fn rows(
        csv: &mut csv::Reader<&[u8]>,
        text: &[u8],
        catalog: &Catalog,
        err: &dyn Fn(u64, String) -> Error,
    ) -> Result<Vec<(IpAddr, IpAddr, IpFacts)>, Error> {
        let line = header_line(csv, text);
        let headers = csv.headers().map_err(|e| err(line, e.to_string()))?.clone();
        let col = |n: &str| {
            headers
                .iter()
                .position(|h| h.trim_start_matches('\u{feff}').eq_ignore_ascii_case(n))
        };
        let (cidr, start, end) = (col("cidr"), col("start"), col("end"));
        if cidr.is_none() && (start.is_none() || end.is_none()) {
            return Err(err(
                line,
                "the header row needs a `cidr` column or `start` and `end` columns \
                 (then any of carrier, province, city, ip_type, customer)"
                    .to_owned(),
            ));
        }
        let cols = Cols {
            carrier: col("carrier"),
            province: col("province"),
            city: col("city"),
            ip_type: col("ip_type"),
            customer: col("customer"),
        };
        let mut rows = Vec::new();
        for record in records(csv, text, err) {
            let (line, record) = record?;
            let field = |c: Option<usize>| c.and_then(|c| record.get(c)).filter(|v| !v.is_empty());
            let (lo, hi) = if let Some(net) = field(cidr) {
                let net: IpNet = net.parse().map_err(|_| {
                    err(
                        line,
                        format!("`{net}` is not a CIDR block like 192.0.2.0/24"),
                    )
                })?;
                (net.network(), net.broadcast())
            } else {
                let parse = |v: Option<&str>, which: &str| -> Result<IpAddr, Error> {
                    let v =
                        v.ok_or_else(|| err(line, format!("the `{which}` address is missing")))?;
                    v.parse()
                        .map_err(|_| err(line, format!("`{v}` ({which}) is not an IP address")))
                };
                (parse(field(start), "start")?, parse(field(end), "end")?)
            };
            check_range(lo, hi).map_err(|m| err(line, m))?;
            let facts = row_facts(catalog, &cols, &record, line, err)?;
            rows.push((lo, hi, facts));
        }
        Ok(rows)
    }
}

/// Where the optional columns are.
struct Cols {
    carrier: Option<usize>,
    province: Option<usize>,
    city: Option<usize>,
    ip_type: Option<usize>,
    customer: Option<usize>,
}

/// The facts of one plan row, normalised through the catalog.
fn row_facts(
    catalog: &Catalog,
    cols: &Cols,
    record: &csv::StringRecord,
    line: u64,
    err: &dyn Fn(u64, String) -> Error,
) -> Result<IpFacts, Error> {
    let field = |c: Option<usize>| c.and_then(|c| record.get(c)).filter(|v| !v.is_empty());
    let mut facts = IpFacts::default();
    if let Some(v) = field(cols.carrier) {
        let c = catalog.carrier(v).ok_or_else(|| {
            err(
                line,
                format!(
                    "unknown carrier `{v}`; use one of: {}",
                    catalog.carrier_choices()
                ),
            )
        })?;
        facts.carrier = Some(c.id.clone());
    }
    if let Some(v) = field(cols.province) {
        facts.province = Some(province_id(catalog, v).ok_or_else(|| {
            err(
                line,
                format!(
                    "unknown province `{v}`; use one of: {}",
                    catalog.province_choices()
                ),
            )
        })?);
    }
    if let Some(v) = field(cols.city) {
        facts.city = Some(
            city_code(catalog, facts.province.as_ref(), v).ok_or_else(|| {
                let scope = facts.province.as_ref().map_or_else(
                    || "in the catalog (or it is ambiguous without a province)".to_owned(),
                    |p| format!("in {p}"),
                );
                err(
                    line,
                    format!(
                        "unknown city `{v}` {scope}; use a catalog city name or its GB/T 2260 code"
                    ),
                )
            })?,
        );
        if facts.province.is_none() {
            facts.province = facts
                .city
                .as_ref()
                .and_then(|c| catalog.city_by_code(c))
                .map(|c| c.province.clone());
        }
    }
    if let Some(v) = field(cols.ip_type) {
        facts.ip_type = Some(IpType::parse(v).ok_or_else(|| {
            err(
                line,
                format!("unknown ip_type `{v}`; use one of: {}", IpType::CHOICES),
            )
        })?);
    }
    facts.customer = field(cols.customer).map(str::to_owned);
    Ok(facts)
}
