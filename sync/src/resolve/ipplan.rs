//! The carrier's own address plan: a CSV of blocks (CIDR or start–end) with
//! carrier, province, city, IP type and customer.

use std::io::Read;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use lineprobe_shared::Catalog;

use super::{IpFacts, IpSource, IpType, RangeTable, city_code, open_data_file, province_id};
use crate::Error;

/// An address plan loaded into memory; lookups are one binary search.
#[derive(Debug, Clone)]
pub struct IpPlanSource {
    name: String,
    version: String,
    table: RangeTable<IpFacts>,
}

impl IpPlanSource {
    /// Loads the plan at `path`; `version` defaults to the file's date.
    pub fn open(
        name: impl Into<String>,
        version: Option<String>,
        path: &Path,
        catalog: &Catalog,
    ) -> Result<Self, Error> {
        let (file, version) = open_data_file(path, version)?;
        Self::from_reader(name, version, &path.display().to_string(), file, catalog)
    }

    /// Loads a plan from `reader`; `what` names it in error messages.
    ///
    /// The header row is required. Columns: `cidr` or `start,end`; then any
    /// of `carrier`, `province`, `city`, `ip_type`, `customer`. Carrier,
    /// province, city and IP type must be known to the catalog: an unknown
    /// value fails the load with the file, line and valid choices.
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
            .has_headers(true)
            .flexible(true)
            .trim(csv::Trim::All)
            .comment(Some(b'#'))
            .from_reader(reader);
        let headers = csv.headers().map_err(|e| err(1, e.to_string()))?.clone();
        let col = |n: &str| {
            headers
                .iter()
                .position(|h| h.trim_start_matches('\u{feff}').eq_ignore_ascii_case(n))
        };
        let (cidr, start, end) = (col("cidr"), col("start"), col("end"));
        if cidr.is_none() && (start.is_none() || end.is_none()) {
            return Err(err(
                1,
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
        for record in csv.records() {
            let record = record.map_err(|e| {
                let line = e.position().map_or(0, csv::Position::line);
                err(line, e.to_string())
            })?;
            let line = record.position().map_or(0, csv::Position::line);
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
            let facts = row_facts(catalog, &cols, &record, line, &err)?;
            rows.push((lo, hi, facts));
        }
        Ok(Self {
            name: name.into(),
            version: version.into(),
            table: RangeTable::build(rows),
        })
    }

    /// The number of blocks in the plan.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when the plan has no blocks.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
    err: &impl Fn(u64, String) -> Error,
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

impl IpSource for IpPlanSource {
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
