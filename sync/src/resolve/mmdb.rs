//! MaxMind-format databases: GeoIP2/GeoLite2 City and Country, ASN, ISP,
//! Anonymous-IP, Connection-Type, and DB-IP's flat layout. The kind is read
//! from the file's metadata; IPv6 addresses only go to files that hold IPv6.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use lineprobe_shared::{Catalog, ProvinceCode};
use maxminddb::{Reader, geoip2};
use serde::Deserialize;

use super::{
    Anonymous, IpFacts, IpSource, IpType, carrier_of, city_code, hosting_type, province_id,
};
use crate::Error;

/// What a MaxMind-format database holds, from its `database_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmdbKind {
    /// GeoIP2/GeoLite2 City, Country or Enterprise.
    City,
    /// GeoLite2/GeoIP2 ASN.
    Asn,
    /// GeoIP2 ISP.
    Isp,
    /// GeoIP2 Anonymous-IP.
    AnonymousIp,
    /// GeoIP2 Connection-Type.
    ConnectionType,
    /// DB-IP (`dbip-…`): flat `country_code, state1, city` or ASN records,
    /// or the GeoIP2 layout of DB-IP's own lite files.
    Dbip,
}

impl MmdbKind {
    const SUPPORTED: &'static str = "GeoIP2/GeoLite2-City, GeoIP2/GeoLite2-Country, \
        GeoIP2-Enterprise, GeoLite2-ASN, GeoIP2-ISP, GeoIP2-Anonymous-IP, \
        GeoIP2-Connection-Type, dbip-*";

    /// The kind a `database_type` names, if supported.
    pub fn detect(database_type: &str) -> Option<Self> {
        let t = database_type.to_ascii_lowercase();
        let kind = if t.starts_with("dbip") || t.starts_with("db-ip") {
            Self::Dbip
        } else if t.contains("anonymous-ip") {
            Self::AnonymousIp
        } else if t.contains("connection-type") {
            Self::ConnectionType
        } else if t.ends_with("-isp") || t.contains("-isp-") {
            Self::Isp
        } else if t.ends_with("-asn") || t.contains("-asn-") {
            Self::Asn
        } else if t.contains("city") || t.contains("country") || t.contains("enterprise") {
            Self::City
        } else {
            return None;
        };
        Some(kind)
    }
}

#[derive(Debug)]
struct Db {
    path: PathBuf,
    kind: MmdbKind,
    reader: Reader<Vec<u8>>,
    records: RecordCache,
}

/// Most decoded records kept per file. A City database has a few hundred
/// thousand distinct records at most; the hot ones (the carriers' routers
/// and the blocks subscribers' lines are in) are far fewer.
const CACHED_RECORDS: usize = 1 << 16;

/// The facts of each record decoded so far, by the record's offset in the
/// file's data section. Many networks share one record (every block of a
/// carrier in one city), and decoding a record and normalising its names
/// against the catalogs costs several times the tree walk that finds it,
/// so each record is decoded once. The facts depend on the record only,
/// never on the address looked up. A record that says nothing is kept as
/// empty facts. Bounded: when full it starts over.
#[derive(Default)]
struct RecordCache {
    records: RwLock<HashMap<usize, IpFacts>>,
}

impl RecordCache {
    fn get(&self, offset: usize) -> Option<IpFacts> {
        self.records
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&offset)
            .cloned()
    }

    fn put(&self, offset: usize, facts: Option<&IpFacts>) {
        let mut records = self.records.write().unwrap_or_else(PoisonError::into_inner);
        if records.len() >= CACHED_RECORDS {
            records.clear();
        }
        records.insert(offset, facts.cloned().unwrap_or_default());
    }
}

impl fmt::Debug for RecordCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self
            .records
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("RecordCache")
            .field("records", &len)
            .finish()
    }
}

/// One or more MaxMind-format files answering as one source (typically an
/// IPv4 and an IPv6 file of the same database); the first file that knows an
/// attribute wins.
#[derive(Debug)]
pub struct MmdbSource {
    name: String,
    version: String,
    dbs: Vec<Db>,
    catalog: Arc<Catalog>,
}

impl MmdbSource {
    /// Opens `paths`; `version` defaults to each file's database type and
    /// build date (`GeoLite2-City 2024-05-01`).
    pub fn open(
        name: impl Into<String>,
        version: Option<String>,
        paths: &[PathBuf],
        catalog: Arc<Catalog>,
    ) -> Result<Self, Error> {
        let mut dbs = Vec::with_capacity(paths.len());
        let mut versions = Vec::new();
        for path in paths {
            let db = open_db(path)?;
            let meta = db.reader.metadata();
            let date = chrono::DateTime::from_timestamp(
                i64::try_from(meta.build_epoch).unwrap_or(i64::MAX),
                0,
            )
            .map_or_else(
                || "unknown date".to_owned(),
                |d| d.format("%Y-%m-%d").to_string(),
            );
            let v = format!("{} {date}", meta.database_type);
            if !versions.contains(&v) {
                versions.push(v);
            }
            dbs.push(db);
        }
        Ok(Self {
            name: name.into(),
            version: version.unwrap_or_else(|| versions.join(", ")),
            dbs,
            catalog,
        })
    }

    /// The kinds of the opened files, in order.
    pub fn kinds(&self) -> Vec<MmdbKind> {
        self.dbs.iter().map(|d| d.kind).collect()
    }
}

fn open_db(path: &Path) -> Result<Db, Error> {
    let what = path.display().to_string();
    let reader = Reader::open_readfile(path).map_err(|source| Error::Mmdb {
        what: what.clone(),
        source,
    })?;
    let ty = &reader.metadata().database_type;
    let kind = MmdbKind::detect(ty).ok_or_else(|| Error::SourceData {
        what: what.clone(),
        message: format!(
            "unsupported database type `{ty}`; supported: {}",
            MmdbKind::SUPPORTED
        ),
    })?;
    Ok(Db {
        path: path.to_owned(),
        kind,
        reader,
        records: RecordCache::default(),
    })
}

/// DB-IP's flat record layout (the ip-location-db builds).
#[derive(Debug, Deserialize)]
struct DbipFlat<'a> {
    #[serde(default)]
    country_code: Option<&'a str>,
    #[serde(default)]
    state1: Option<&'a str>,
    #[serde(default)]
    state2: Option<&'a str>,
    #[serde(default)]
    city: Option<&'a str>,
    #[serde(default)]
    autonomous_system_number: Option<u32>,
    #[serde(default)]
    autonomous_system_organization: Option<&'a str>,
}

fn flag(b: Option<bool>) -> bool {
    b.unwrap_or(false)
}

impl MmdbSource {
    fn lookup_db(&self, db: &Db, ip: IpAddr) -> Result<Option<IpFacts>, maxminddb::MaxMindDbError> {
        let result = db.reader.lookup(ip)?;
        let Some(offset) = result.offset() else {
            return Ok(None);
        };
        if let Some(facts) = db.records.get(offset) {
            return Ok((!facts.is_empty()).then_some(facts));
        }
        let facts = self.decode(db, &result)?;
        db.records.put(offset, facts.as_ref());
        Ok(facts)
    }

    /// The facts of the record a lookup found.
    fn decode(
        &self,
        db: &Db,
        result: &maxminddb::LookupResult<'_, Vec<u8>>,
    ) -> Result<Option<IpFacts>, maxminddb::MaxMindDbError> {
        let cat = &*self.catalog;
        let facts = match db.kind {
            MmdbKind::City => result
                .decode::<geoip2::City<'_>>()?
                .map(|r| self.city_facts(&r)),
            MmdbKind::Dbip => match result.decode::<DbipFlat<'_>>() {
                Ok(Some(r)) if r.country_code.is_some() || r.autonomous_system_number.is_some() => {
                    let mut f = self.geo(
                        r.country_code,
                        &[
                            r.state1.into_iter().collect(),
                            r.state2.into_iter().collect(),
                        ],
                        &[r.city],
                    );
                    let asn = r.autonomous_system_number;
                    let org = r.autonomous_system_organization;
                    f.asn = asn;
                    f.org = org.map(str::to_owned);
                    if asn.is_some() || org.is_some() {
                        f.carrier = carrier_of(cat, asn, org.as_slice());
                        f.ip_type = hosting_type(cat, asn, f.carrier.as_ref());
                    }
                    Some(f)
                }
                // DB-IP's own lite files use the GeoIP2 layout.
                _ => result
                    .decode::<geoip2::City<'_>>()?
                    .map(|r| self.city_facts(&r)),
            },
            MmdbKind::Asn => result.decode::<geoip2::Asn<'_>>()?.map(|r| {
                let asn = r.autonomous_system_number;
                let org = r.autonomous_system_organization;
                let carrier = carrier_of(cat, asn, org.as_slice());
                IpFacts {
                    ip_type: hosting_type(cat, asn, carrier.as_ref()),
                    carrier,
                    asn,
                    org: org.map(str::to_owned),
                    ..IpFacts::default()
                }
            }),
            MmdbKind::Isp => result
                .decode::<geoip2::Isp<'_>>()?
                .map(|r| self.isp_facts(&r)),
            // The database lists anonymising networks only; a record with no
            // flag set says nothing.
            MmdbKind::AnonymousIp => result
                .decode::<geoip2::AnonymousIp>()?
                .map(|r| Anonymous {
                    vpn: flag(r.is_anonymous_vpn),
                    proxy: flag(r.is_public_proxy),
                    residential_proxy: flag(r.is_residential_proxy),
                    hosting: flag(r.is_hosting_provider),
                    tor: flag(r.is_tor_exit_node),
                })
                .filter(|a| *a != Anonymous::default())
                .map(|a| IpFacts {
                    anonymous: Some(a),
                    ..IpFacts::default()
                }),
            MmdbKind::ConnectionType => {
                result
                    .decode::<geoip2::ConnectionType<'_>>()?
                    .map(|r| IpFacts {
                        ip_type: r.connection_type.map(|t| match t {
                            "Cable/DSL" | "Dialup" => IpType::Residential,
                            "Cellular" => IpType::Mobile,
                            "Corporate" => IpType::Enterprise,
                            _ => IpType::Unknown,
                        }),
                        ..IpFacts::default()
                    })
            }
        };
        Ok(facts.filter(|f| !f.is_empty()))
    }

    fn city_facts(&self, r: &geoip2::City<'_>) -> IpFacts {
        let subs: Vec<Vec<&str>> = r
            .subdivisions
            .iter()
            .map(|s| {
                [s.iso_code, s.names.simplified_chinese, s.names.english]
                    .into_iter()
                    .flatten()
                    .collect()
            })
            .collect();
        let city = [r.city.names.simplified_chinese, r.city.names.english];
        self.geo(r.country.iso_code, &subs, &city)
    }

    fn isp_facts(&self, r: &geoip2::Isp<'_>) -> IpFacts {
        let cat = &*self.catalog;
        let asn = r.autonomous_system_number;
        let orgs: Vec<&str> = [r.isp, r.organization, r.autonomous_system_organization]
            .into_iter()
            .flatten()
            .collect();
        // The ISP and organisation names are what this database adds over
        // an ASN table, so they come first: a network announced through
        // another carrier's AS (most Dr.Peng space is announced by China
        // Telecom's AS4847) is named for what it is only there. Then the
        // ASN, then the AS's own name.
        let named = [r.isp, r.organization]
            .into_iter()
            .flatten()
            .find_map(|o| cat.carrier_by_org(o))
            .map(|c| c.id.clone());
        let as_org: Vec<&str> = r.autonomous_system_organization.into_iter().collect();
        let mut carrier = named.or_else(|| carrier_of(cat, asn, &as_org));
        if carrier.is_none() && r.mobile_country_code == Some("460") {
            carrier = r
                .mobile_network_code
                .and_then(|m| cat.carrier_by_mnc(m))
                .map(|c| c.id.clone());
        }
        IpFacts {
            ip_type: hosting_type(cat, asn, carrier.as_ref()),
            carrier,
            asn,
            org: orgs.first().map(|o| (*o).to_owned()),
            ..IpFacts::default()
        }
    }

    /// Province and city from a country code, subdivision spellings (largest
    /// first, each as several spellings) and city names. Only Chinese
    /// records are normalised: outside China the catalog has nothing to say,
    /// and a foreign subdivision code could collide with a province's.
    fn geo(
        &self,
        country: Option<&str>,
        subdivisions: &[Vec<&str>],
        cities: &[Option<&str>],
    ) -> IpFacts {
        let cat = &*self.catalog;
        let mut facts = IpFacts::default();
        let province: Option<ProvinceCode> = match country {
            Some("CN") => subdivisions
                .iter()
                .flatten()
                .find_map(|s| province_id(cat, s)),
            // Hong Kong, Macau and Taiwan are countries to MaxMind and
            // provincial-level divisions to the catalog.
            Some(cc @ ("HK" | "MO" | "TW")) => province_id(cat, cc),
            _ => return facts,
        };
        facts.city = cities
            .iter()
            .flatten()
            .find_map(|c| city_code(cat, province.as_ref(), c));
        facts.province = province.or_else(|| {
            facts
                .city
                .as_ref()
                .and_then(|c| cat.city_by_code(c))
                .map(|c| c.province.clone())
        });
        facts
    }
}

impl IpSource for MmdbSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn data_version(&self) -> &str {
        &self.version
    }

    fn lookup(&self, ip: IpAddr) -> Result<Option<IpFacts>, Error> {
        let mut merged: Option<IpFacts> = None;
        for db in &self.dbs {
            // An IPv4-only file errors on IPv6 lookups; it simply has no answer.
            let v6_only = matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none());
            if v6_only && db.reader.metadata().ip_version != 6 {
                continue;
            }
            let ip = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                IpAddr::V4(_) => ip,
            };
            let facts = self.lookup_db(db, ip).map_err(|source| Error::Mmdb {
                what: db.path.display().to_string(),
                source,
            })?;
            if let Some(f) = facts {
                let m = merged.get_or_insert_with(IpFacts::default);
                let city_fits = m.province.is_none() || m.province == f.province;
                if m.city.is_none() && city_fits {
                    m.city = f.city;
                }
                m.carrier = m.carrier.take().or(f.carrier);
                m.province = m.province.take().or(f.province);
                m.asn = m.asn.or(f.asn);
                m.org = m.org.take().or(f.org);
                m.ip_type = m.ip_type.or(f.ip_type);
                m.customer = m.customer.take().or(f.customer);
                m.anonymous = m.anonymous.or(f.anonymous);
            }
        }
        Ok(merged)
    }
}

#[cfg(test)]
mod tests {
    use ipnet::IpNet;
    use mmdb_writer::{IpVersion, Writer};
    use serde_json::json;

    use super::*;

    #[derive(serde::Serialize)]
    struct Isp {
        autonomous_system_number: u32,
        isp: &'static str,
    }

    fn db(dir: &Path) -> (PathBuf, PathBuf) {
        let mut city = Writer::builder("GeoIP2-City")
            .ip_version(IpVersion::V6)
            .build();
        let gd = json!({
            "country": { "iso_code": "CN" },
            "subdivisions": [{ "iso_code": "GD" }],
            "city": { "names": { "en": "Guangzhou" } },
        });
        // Two networks share one record; a third says nothing of China.
        for net in ["113.64.0.0/16", "113.66.0.0/16"] {
            city.insert(net.parse::<IpNet>().unwrap(), &gd).unwrap();
        }
        city.insert(
            "81.2.69.0/24".parse::<IpNet>().unwrap(),
            &json!({ "country": { "iso_code": "GB" } }),
        )
        .unwrap();
        let mut isp = Writer::builder("GeoIP2-ISP")
            .ip_version(IpVersion::V6)
            .build();
        isp.insert(
            "113.64.0.0/14".parse::<IpNet>().unwrap(),
            &Isp {
                autonomous_system_number: 4134,
                isp: "Chinanet",
            },
        )
        .unwrap();
        let paths = (dir.join("city.mmdb"), dir.join("isp.mmdb"));
        std::fs::write(&paths.0, city.to_bytes().unwrap()).unwrap();
        std::fs::write(&paths.1, isp.to_bytes().unwrap()).unwrap();
        paths
    }

    #[test]
    fn records_are_decoded_once_and_answer_like_the_first_time() {
        let dir = tempfile::tempdir().unwrap();
        let (city, isp) = db(dir.path());
        let catalog = Arc::new(Catalog::embedded().unwrap());
        let source = MmdbSource::open("m", None, &[city, isp], catalog).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();

        let first = source.lookup(ip("113.64.1.1")).unwrap().unwrap();
        assert_eq!(first.province.as_ref().unwrap().as_str(), "CN-GD");
        assert_eq!(first.city.as_ref().unwrap().as_str(), "440100");
        assert_eq!(first.carrier.as_ref().unwrap().as_str(), "china_telecom");
        assert_eq!(first.asn, Some(4134));
        // Again, another address of the same record, and its IPv4-mapped
        // form: the cached record answers the same.
        for again in ["113.64.1.1", "113.66.200.7", "::ffff:113.64.9.9"] {
            assert_eq!(source.lookup(ip(again)).unwrap().as_ref(), Some(&first));
        }
        let cached = |i: usize| source.dbs[i].records.records.read().unwrap().len();
        assert_eq!((cached(0), cached(1)), (1, 1));
        // A record that says nothing stays nothing, also from the cache.
        for _ in 0..2 {
            assert_eq!(source.lookup(ip("81.2.69.1")).unwrap(), None);
        }
        assert_eq!(cached(0), 2);
        // An address in no network is not cached.
        assert_eq!(source.lookup(ip("8.8.8.8")).unwrap(), None);
        assert_eq!(cached(0), 2);
    }
}
