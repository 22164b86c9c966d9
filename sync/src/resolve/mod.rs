//! Resolving the actual carrier, province and city of an address through an
//! ordered chain of sources: the carrier's own address plan, ASN range
//! tables, MaxMind-format databases, an HTTP lookup service. Every attribute
//! remembers which source and which data version gave it, so a verdict can
//! say why.
//!
//! [`IpFacts`] and its parts serialize to JSON (the form the HTTP source's
//! answer cache is persisted in); absent attributes are left out:
//!
//! ```json
//! {"carrier":"china_telecom","province":"CN-GD","city":"440100","asn":4134,
//!  "org":"Chinanet","ip_type":"residential",
//!  "anonymous":{"vpn":false,"proxy":true,"residential_proxy":false,"hosting":false,"tor":false}}
//! ```
//!
//! `ip_type` is one of `residential`, `enterprise`, `idc`, `mobile`,
//! `education`, `government`, `unknown`. Reading ignores fields it does not
//! know, so a cache written by a newer version still loads.

mod config;
mod csvtable;
mod http;
mod ipplan;
mod mmdb;
mod ranges;
mod watch;

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use lineprobe_shared::{AsnRole, Carrier, CarrierId, Catalog, CityCode, ProvinceCode};
use serde::{Deserialize, Serialize};

use crate::Error;

pub use config::{ChainConfig, Rate, SourceConfig, SourceKind};
pub use csvtable::{CsvFormat, CsvSource};
pub use http::{
    AnswerCache, BREAKER_COOLDOWN, BREAKER_FAILURES, CacheEntry, FieldMap, HttpSettings,
    HttpSource, JsonPointer, Pointers, SuccessCheck,
};
pub use ipplan::{IpPlanFormat, IpPlanSource};
pub use mmdb::{MmdbKind, MmdbSource};
pub use ranges::{RangesFormat, RangesSource};
pub use watch::{SOURCE_SETTLE, SourceWatch};

/// A source of facts about addresses.
pub trait IpSource: fmt::Debug + Send + Sync {
    /// The source's name, as configured (`ipplan`, `geolite2-city`…).
    fn name(&self) -> &str;
    /// The version of the data the source answers from (a build date, a
    /// file date, a release name).
    fn data_version(&self) -> &str;
    /// What the source knows about `ip`, or `None` when it knows nothing.
    fn lookup(&self, ip: IpAddr) -> Result<Option<IpFacts>, Error>;
    /// The cache of answers of a source that keeps one (the HTTP source),
    /// so that it can be persisted and preloaded; `None` for sources that
    /// answer from local data.
    fn answer_cache(&self) -> Option<&AnswerCache> {
        None
    }
}

/// What kind of line or network an address belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpType {
    /// A home broadband line.
    Residential,
    /// A business line (dedicated or enterprise broadband).
    Enterprise,
    /// A data centre, hosting or cloud network.
    Idc,
    /// A mobile (cellular) network.
    Mobile,
    /// A campus or research network.
    Education,
    /// A government network.
    Government,
    /// Known to the source but of no definite kind.
    Unknown,
}

impl IpType {
    /// The accepted spellings, for error messages.
    pub const CHOICES: &'static str = "residential (家宽), enterprise (专线/企业), idc (数据中心), \
         mobile (移动网络), education (教育网), government (政务), unknown";

    /// Parses an address-plan spelling: `residential`, `家宽`, `IDC`, …
    pub fn parse(s: &str) -> Option<Self> {
        let key = s.trim().to_lowercase();
        let t = match key.as_str() {
            "residential" | "home" | "broadband" | "家宽" | "家庭宽带" | "住宅" | "家庭" => {
                Self::Residential
            }
            "enterprise" | "business" | "corporate" | "专线" | "企业" | "企业宽带" | "政企" => {
                Self::Enterprise
            }
            "idc" | "hosting" | "datacenter" | "data_center" | "数据中心" | "机房" => {
                Self::Idc
            }
            "mobile" | "cellular" | "移动网络" | "蜂窝" => Self::Mobile,
            "education" | "campus" | "教育网" | "校园网" => Self::Education,
            "government" | "政务" | "政府" => Self::Government,
            "unknown" | "未知" => Self::Unknown,
            _ => return None,
        };
        Some(t)
    }
}

/// The anonymity flags of a MaxMind Anonymous-IP record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[allow(clippy::struct_excessive_bools)] // five independent flags, as the database has them
pub struct Anonymous {
    /// Registered to an anonymous VPN provider.
    pub vpn: bool,
    /// A public proxy.
    pub proxy: bool,
    /// A proxy on a residential line.
    pub residential_proxy: bool,
    /// A hosting or VPN provider.
    pub hosting: bool,
    /// A Tor exit node.
    pub tor: bool,
}

/// What one source knows about one address; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IpFacts {
    /// The carrier, as a catalog id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carrier: Option<CarrierId>,
    /// The province, as a catalog id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub province: Option<ProvinceCode>,
    /// The city, as a catalog code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<CityCode>,
    /// The announcing autonomous system.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    /// The organisation or ISP name, as the source spells it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// The kind of network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_type: Option<IpType>,
    /// The customer the block is assigned to (address plans only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// Anonymity flags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<Anonymous>,
}

impl IpFacts {
    /// True when no field is known.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A value with the source and data version that gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attributed<T> {
    /// The value.
    pub value: T,
    /// The source's name.
    pub source: String,
    /// The source's data version.
    pub version: String,
}

/// The facts about an address after the whole chain, each with its origin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Resolved {
    /// The carrier.
    pub carrier: Option<Attributed<CarrierId>>,
    /// The province.
    pub province: Option<Attributed<ProvinceCode>>,
    /// The city; always within `province` when both are known.
    pub city: Option<Attributed<CityCode>>,
    /// The autonomous system.
    pub asn: Option<Attributed<u32>>,
    /// The organisation or ISP name.
    pub org: Option<Attributed<String>>,
    /// The kind of network.
    pub ip_type: Option<Attributed<IpType>>,
    /// The customer.
    pub customer: Option<Attributed<String>>,
    /// Anonymity flags.
    pub anonymous: Option<Attributed<Anonymous>>,
    /// The sources that failed to answer (a lookup service that timed out,
    /// a database that cannot be read): the attributes above come from the
    /// others, and a caller may retry later for a fuller answer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<SourceFailure>,
}

/// A source that failed while resolving an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceFailure {
    /// The source's name.
    pub source: String,
    /// What failed, as the error says it.
    pub message: String,
}

/// An ordered chain of sources: for each attribute the first source that
/// knows it wins, later sources fill in the rest. A kind of network
/// `unknown` counts as known only when no source gives a definite one.
#[derive(Debug, Default)]
pub struct Chain {
    sources: Vec<Box<dyn IpSource>>,
}

impl Chain {
    /// A chain of `sources`, asked in this order.
    pub fn new(sources: Vec<Box<dyn IpSource>>) -> Self {
        Self { sources }
    }

    /// Appends a source, asked after the others.
    pub fn push(&mut self, source: Box<dyn IpSource>) {
        self.sources.push(source);
    }

    /// The sources, in order.
    pub fn sources(&self) -> &[Box<dyn IpSource>] {
        &self.sources
    }

    /// Resolves `ip` attribute by attribute. `catalog` keeps the city
    /// consistent with the province: a city from a later source that lies in
    /// another province than the one already resolved is not taken.
    ///
    /// A source that fails does not stop the chain: its error is logged
    /// (`warn`), recorded in [`Resolved::failures`], and the other sources
    /// answer. One misbehaving lookup service must not leave every address
    /// unresolved; the caller sees the failure and may retry later. The
    /// `Result` is kept for errors of the chain itself; today there are none.
    ///
    /// Sources may block (the HTTP source waits on the network): call this
    /// from a blocking thread, never from an async runtime's worker.
    pub fn resolve(&self, catalog: &Catalog, ip: IpAddr) -> Result<Resolved, Error> {
        let mut out = Resolved::default();
        for source in &self.sources {
            let facts = match source.lookup(ip) {
                Ok(Some(facts)) => facts,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(
                        source = source.name(),
                        %ip,
                        %error,
                        "address source failed; resolving with the others"
                    );
                    out.failures.push(SourceFailure {
                        source: source.name().to_owned(),
                        message: error.to_string(),
                    });
                    continue;
                }
            };
            let tag = Origin {
                source: source.name(),
                version: source.data_version(),
            };
            fill(&mut out.carrier, facts.carrier, &tag);
            fill(&mut out.province, facts.province, &tag);
            if out.city.is_none()
                && let Some(city) = facts.city
            {
                let city_province = catalog.city_by_code(&city).map(|c| &c.province);
                let fits = match (&out.province, city_province) {
                    (Some(p), Some(cp)) => p.value == *cp,
                    (None, _) => true,
                    (Some(_), None) => false,
                };
                if fits {
                    if out.province.is_none() {
                        out.province = city_province.cloned().map(|p| tag.tag(p));
                    }
                    out.city = Some(tag.tag(city));
                }
            }
            fill(&mut out.asn, facts.asn, &tag);
            fill(&mut out.org, facts.org, &tag);
            // A source that knows the address but not its kind (a
            // connection-type database's "Satellite", a spelling the service
            // uses that we do not) must not hide a later source's definite
            // kind: `idc` from a later source is a proxy signal.
            if out
                .ip_type
                .as_ref()
                .is_some_and(|t| t.value == IpType::Unknown)
                && facts.ip_type.is_some_and(|t| t != IpType::Unknown)
            {
                out.ip_type = None;
            }
            fill(&mut out.ip_type, facts.ip_type, &tag);
            fill(&mut out.customer, facts.customer, &tag);
            fill(&mut out.anonymous, facts.anonymous, &tag);
        }
        Ok(out)
    }
}

/// The source and data version a value came from.
struct Origin<'a> {
    source: &'a str,
    version: &'a str,
}

impl Origin<'_> {
    fn tag<T>(&self, value: T) -> Attributed<T> {
        Attributed {
            value,
            source: self.source.to_owned(),
            version: self.version.to_owned(),
        }
    }
}

fn fill<T>(slot: &mut Option<Attributed<T>>, value: Option<T>, origin: &Origin<'_>) {
    if slot.is_none() {
        *slot = value.map(|v| origin.tag(v));
    }
}

/// Opens a source's data file, with its data version: `version` when the
/// configuration gave one, else the day the file was last modified.
pub(crate) fn open_data_file(
    path: &Path,
    version: Option<String>,
) -> Result<(std::fs::File, String), Error> {
    let file = std::fs::File::open(path).map_err(|source| Error::Input {
        what: path.display().to_string(),
        source,
    })?;
    Ok((file, version.unwrap_or_else(|| file_date(path))))
}

/// The day a file was last modified, as a default data version.
pub(crate) fn file_date(path: &Path) -> String {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_or_else(
            |_| "unknown".to_owned(),
            |t| {
                chrono::DateTime::<chrono::Utc>::from(t)
                    .format("%Y-%m-%d")
                    .to_string()
            },
        )
}

/// An address as a number with its family, IPv4-mapped IPv6 addresses
/// folded to IPv4 so that both spellings find the same row.
pub(crate) fn key(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(v4) => (false, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (false, u128::from(u32::from(v4))),
            None => (true, u128::from(v6)),
        },
    }
}

/// Address ranges mapped to values, flattened at build time into disjoint
/// segments so that a lookup is one binary search; where ranges overlap the
/// narrowest one wins (a /24 carved out of a /16 keeps its own row).
#[derive(Debug, Clone)]
pub(crate) struct RangeTable<T> {
    v4: Vec<(u128, u128, usize)>,
    v6: Vec<(u128, u128, usize)>,
    values: Vec<T>,
}

impl<T> RangeTable<T> {
    /// Builds the table from `(start, end, value)` rows of one family each
    /// (the caller checks that start and end share a family and start ≤ end).
    pub(crate) fn build(rows: Vec<(IpAddr, IpAddr, T)>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut values = Vec::with_capacity(rows.len());
        for (start, end, value) in rows {
            let (six, s) = key(start);
            let (_, e) = key(end);
            let idx = values.len();
            values.push(value);
            if six {
                v6.push((s, e, idx));
            } else {
                v4.push((s, e, idx));
            }
        }
        Self {
            v4: flatten(&v4),
            v6: flatten(&v6),
            values,
        }
    }

    /// The value of the narrowest range that holds `ip`.
    pub(crate) fn get(&self, ip: IpAddr) -> Option<&T> {
        let (six, k) = key(ip);
        let segs = if six { &self.v6 } else { &self.v4 };
        let i = segs.partition_point(|&(s, _, _)| s <= k).checked_sub(1)?;
        let &(_, e, idx) = segs.get(i)?;
        if k <= e { self.values.get(idx) } else { None }
    }

    /// The number of rows.
    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }
}

/// Turns possibly overlapping ranges into sorted disjoint segments, each
/// owned by the narrowest covering range (on equal width, the later row).
fn flatten(ranges: &[(u128, u128, usize)]) -> Vec<(u128, u128, usize)> {
    // Boundaries: every start, and every end + 1, with the range's width.
    let mut events: Vec<(u128, bool, u128, usize)> = Vec::with_capacity(ranges.len() * 2);
    for &(s, e, i) in ranges {
        events.push((s, true, e - s, i));
        if let Some(after) = e.checked_add(1) {
            events.push((after, false, e - s, i));
        }
    }
    events.sort_unstable_by_key(|&(at, _, _, _)| at);
    // Active ranges ordered by (width, reverse row) so the first is the winner.
    let mut active: BTreeSet<(u128, Reverse<usize>)> = BTreeSet::new();
    let mut out: Vec<(u128, u128, usize)> = Vec::new();
    let mut j = 0;
    while j < events.len() {
        let Some(&(at, _, _, _)) = events.get(j) else {
            break;
        };
        while let Some(&(a, is_start, width, i)) = events.get(j) {
            if a != at {
                break;
            }
            let k = (width, Reverse(i));
            if is_start {
                active.insert(k);
            } else {
                active.remove(&k);
            }
            j += 1;
        }
        let next = events.get(j).map(|&(a, _, _, _)| a);
        if let Some(&(_, Reverse(winner))) = active.first() {
            let end = next.map_or(u128::MAX, |n| n - 1);
            match out.last_mut() {
                Some(last) if last.2 == winner && last.1.checked_add(1) == Some(at) => {
                    last.1 = end;
                }
                _ => out.push((at, end, winner)),
            }
        }
    }
    out
}

/// Normalises a province spelling to a catalog id.
pub(crate) fn province_id(catalog: &Catalog, s: &str) -> Option<ProvinceCode> {
    catalog.province(s).map(|p| p.id.clone())
}

/// Normalises a city spelling to a catalog code, within `province` if known.
pub(crate) fn city_code(
    catalog: &Catalog,
    province: Option<&ProvinceCode>,
    s: &str,
) -> Option<CityCode> {
    catalog.city(province, s).and_then(|c| c.code.clone())
}

/// An AS number written as text: `4134`, `AS4134`, `as4134`, `AS 4134`, or
/// any of those followed by a space and the network's name
/// (`AS4134 CHINANET-BACKBONE`, as whois and many lookup services write it).
/// `None` for anything else, AS0 included (reserved, never a network's).
pub(crate) fn asn_from_text(text: &str) -> Option<u32> {
    let text = text.trim();
    let rest = text
        .get(..2)
        .filter(|prefix| prefix.eq_ignore_ascii_case("as"))
        .map_or(text, |_| text[2..].trim_start());
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, after) = rest.split_at(digits);
    if !after.is_empty() && !after.starts_with(char::is_whitespace) {
        return None;
    }
    number.parse().ok().filter(|n| *n != 0)
}

/// The carrier of an autonomous system or, failing that, of an organisation
/// string.
pub(crate) fn carrier_of(catalog: &Catalog, asn: Option<u32>, orgs: &[&str]) -> Option<CarrierId> {
    asn.and_then(|a| catalog.carrier_by_asn(a))
        .or_else(|| orgs.iter().find_map(|o| catalog.carrier_by_org(o)))
        .map(|c| c.id.clone())
}

/// What the network says of the address's kind: a hosting network's
/// address, or one of an access carrier's own data-centre or cloud ASes
/// (China Telecom's cloud AS58519, its IDCs), is a data centre's.
pub(crate) fn hosting_type(
    catalog: &Catalog,
    asn: Option<u32>,
    carrier: Option<&CarrierId>,
) -> Option<IpType> {
    let hosting = carrier
        .and_then(|c| catalog.carrier_by_id(c))
        .is_some_and(Carrier::is_hosting);
    let datacenter_as = asn.is_some_and(|a| {
        catalog.carrier_by_asn(a).is_some_and(|c| {
            c.asns
                .iter()
                .any(|x| x.asn == a && matches!(x.role, AsnRole::Datacenter | AsnRole::Cloud))
        })
    });
    (hosting || datacenter_as).then_some(IpType::Idc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn as_numbers_are_read_as_whois_and_lookup_services_write_them() {
        for (text, want) in [
            ("4134", Some(4134)),
            ("AS4134", Some(4134)),
            ("as4134", Some(4134)),
            ("As 4134", Some(4134)),
            (" AS4134 CHINANET-BACKBONE ", Some(4134)),
            ("AS 9808\tCMNET-GD", Some(9808)),
            ("4294967295", Some(u32::MAX)),
            ("", None),
            ("AS", None),
            ("AS0", None),
            ("0", None),
            ("AS-4134", None),
            ("AS4134x", None),
            ("4294967296", None),
            ("ASN4134", None),
            ("CHINANET", None),
        ] {
            assert_eq!(asn_from_text(text), want, "{text:?}");
        }
    }

    #[test]
    fn a_carriers_datacenter_and_cloud_ases_are_data_centres() {
        let cat = Catalog::embedded().unwrap();
        let telecom = CarrierId::new("china_telecom").unwrap();
        // China Telecom's cloud (AS58519) and Beijing IDC (AS23724).
        for asn in [58519, 23724] {
            assert_eq!(
                hosting_type(&cat, Some(asn), Some(&telecom)),
                Some(IpType::Idc),
                "AS{asn}"
            );
        }
        // Its backbone, and an org-matched address with no AS, are not.
        assert_eq!(hosting_type(&cat, Some(4134), Some(&telecom)), None);
        assert_eq!(hosting_type(&cat, None, Some(&telecom)), None);
    }

    #[test]
    fn narrowest_range_wins_and_gaps_stay_empty() {
        let t = RangeTable::build(vec![
            (ip("10.0.0.0"), ip("10.0.255.255"), "wide"),
            (ip("10.0.1.0"), ip("10.0.1.255"), "narrow"),
            (ip("10.0.1.128"), ip("10.0.1.128"), "host"),
            (ip("2001:db8::"), ip("2001:db8::ffff"), "six"),
        ]);
        assert_eq!(t.get(ip("10.0.0.5")), Some(&"wide"));
        assert_eq!(t.get(ip("10.0.1.5")), Some(&"narrow"));
        assert_eq!(t.get(ip("10.0.1.128")), Some(&"host"));
        assert_eq!(t.get(ip("10.0.1.129")), Some(&"narrow"));
        assert_eq!(t.get(ip("10.0.2.0")), Some(&"wide"));
        assert_eq!(t.get(ip("10.1.0.0")), None);
        assert_eq!(t.get(ip("9.255.255.255")), None);
        assert_eq!(t.get(ip("::ffff:10.0.1.7")), Some(&"narrow"));
        assert_eq!(t.get(ip("2001:db8::1")), Some(&"six"));
        assert_eq!(t.get(ip("2001:db9::1")), None);
    }

    /// A source that answers every address with the same kind of network.
    #[derive(Debug)]
    struct Kind(&'static str, IpType);

    impl IpSource for Kind {
        fn name(&self) -> &str {
            self.0
        }
        fn data_version(&self) -> &str {
            // Each test source is its own data version.
            self.0
        }
        fn lookup(&self, _: IpAddr) -> Result<Option<IpFacts>, Error> {
            Ok(Some(IpFacts {
                ip_type: Some(self.1),
                ..IpFacts::default()
            }))
        }
    }

    #[test]
    fn an_unknown_kind_does_not_hide_a_later_sources_definite_one() {
        let cat = Catalog::embedded().unwrap();
        let kind = |sources: Vec<Kind>| {
            let chain = Chain::new(
                sources
                    .into_iter()
                    .map(|s| Box::new(s) as Box<dyn IpSource>)
                    .collect(),
            );
            let t = chain.resolve(&cat, ip("203.0.113.9")).unwrap().ip_type;
            t.map(|t| (t.value, t.source))
        };
        assert_eq!(
            kind(vec![
                Kind("conn-type", IpType::Unknown),
                Kind("service", IpType::Idc),
                Kind("last", IpType::Residential),
            ]),
            Some((IpType::Idc, "service".to_owned()))
        );
        // The first definite kind still wins, and with nothing definite the
        // first source's word stands.
        assert_eq!(
            kind(vec![
                Kind("plan", IpType::Residential),
                Kind("service", IpType::Idc),
            ]),
            Some((IpType::Residential, "plan".to_owned()))
        );
        assert_eq!(
            kind(vec![
                Kind("first", IpType::Unknown),
                Kind("second", IpType::Unknown),
            ]),
            Some((IpType::Unknown, "first".to_owned()))
        );
    }

    #[test]
    fn full_range_ends_do_not_overflow() {
        let t = RangeTable::build(vec![(ip("0.0.0.0"), ip("255.255.255.255"), 1)]);
        assert_eq!(t.get(ip("255.255.255.255")), Some(&1));
        let t = RangeTable::build(vec![(
            ip("::"),
            ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            2,
        )]);
        assert_eq!(
            t.get(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
            Some(&2)
        );
    }
}
