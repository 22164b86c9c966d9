//! Pipeline steps 5 to 7, **check the IP**, **fill** and **comply**: the
//! verdict on one observation of a line, from what was declared, what the
//! device said about proxies, and what the egress address and the public hops
//! of the trace resolved to. Pure: no database, no network, no clock.
//!
//! # The checks
//!
//! *The line's actual carrier* is the carrier of the first public hop that
//! resolves to one (normally the first public hop itself; a later public hop
//! stands in when the first is in no data source), else the egress address's
//! carrier. The egress is not used when it is suspected to be a proxy, nor
//! when it is in a hosting network: neither says anything about the line.
//! A public hop in a hosting network gives no carrier either (see
//! `first_hop_hosting` below). Nor does a first public hop in the receiver's
//! own network when the hops before it did not answer, every public hop
//! after it is in that network too, and the egress resolves outside it
//! (`first_hop_in_receiver_network`): the line's access network stayed
//! silent and the trace shows only where it ends, so the egress stands for
//! the line. (A line on the receiver's own carrier answers from its access
//! network, or leaves through an egress on that carrier.)
//!
//! *Carrier check* — declared vs actual: the same id passes (`carrier_match`;
//! Tietong needs no rule, the catalog resolves its ASNs to `china_mobile`); an
//! actual carrier that is one of the declared carrier's expected upstreams
//! passes (`carrier_via_expected_upstream`: Dr.Peng, cable); anything else
//! fails (`carrier_mismatch`). No actual carrier: `carrier_unknown`; nothing
//! declared: `carrier_undeclared`.
//!
//! *IP check* — the egress address's province vs the declared province
//! (`province_match` / `province_mismatch`), and its city vs the declared city
//! when both sides know one (`city_match` / `city_mismatch`; a district or
//! county matches the city above it, a municipality matches its districts).
//! It is not applied to a proxied egress (`ip_check_skipped`), a non-public
//! one (`egress_not_public`) or a missing one (`egress_missing`); an egress
//! that resolves to no province gives `region_unknown`, a declared city that
//! cannot be compared `city_unknown`, a line declaring no region at all
//! `region_undeclared`. The check *passes* when it was applied, the egress
//! resolved a province and nothing mismatched (with no region declared, it
//! passes vacuously).
//!
//! *Fill* — only where the IP check passes: an undeclared province or city
//! takes the egress's, and an undeclared carrier takes the line's actual
//! carrier (when it is declarable). Filling the carrier is a choice: a line
//! whose carrier was never declared is still recorded with the carrier it
//! runs on, marked as filled with its provenance, so the back office can tell
//! a declaration from a fill. The carrier check itself stays
//! `carrier_undeclared`: a fill never counts as a declaration that matched
//! (such a line can still be `compliant`: nothing it declared is wrong).
//!
//! *Proxy signals* — each a finding with outcome `signal` when raised,
//! `pass` when checked and absent, `unknown` when it cannot be checked:
//!
//! | code | raised when | strength |
//! | --- | --- | --- |
//! | `egress_carrier_differs_from_first_hop` | the egress carrier is not the line's carrier and not related to it (same carrier, an expected upstream either way, or both within the declared carrier and its upstreams) | strong |
//! | `egress_hosting` | the egress is in a hosting network (its carrier is a hosting carrier, or its IP type is `idc`) | strong |
//! | `egress_anonymous` | a source flags the egress anonymous (VPN, proxy, residential proxy, hosting, Tor) | strong |
//! | `first_hop_hosting` | the first public hop that resolves is in a hosting network: the trace itself left through a tunnel | strong |
//! | `multi_level_path` | the public path changes carrier (between unrelated carriers) more than once before the egress | strong |
//! | `device_proxy` | a system or environment proxy is configured on the device | weak |
//!
//! A proxy is suspected when one strong signal is raised, or when two or more
//! signals agree. A device proxy alone is *not* enough: when the egress agrees
//! with the first hop, the proxy evidently did not carry the probe's traffic
//! (it may be a PAC file for some sites, or an unused setting); the finding is
//! kept as evidence. (With `device_proxy` the only weak signal today, "two
//! agree" adds nothing yet; the rule is there for weaker signals to come.)
//!
//! *Multi-level path*: the public hops are taken in order up to the egress
//! address (when the trace passes it) and without the trailing run of hops in
//! the destination's own network (the receiver's carrier ends every path);
//! consecutive hops whose carriers are related do not count as a change.
//!
//! # The verdict
//!
//! The first that holds of `proxy_suspected`, `non_compliant` (carrier check
//! failed), `violating_ip` (IP check failed), `compliant` (a carrier for the
//! line is known and nothing failed); otherwise `indeterminate` — neither a
//! public hop nor the egress resolved to a carrier. A definite finding wins
//! over `indeterminate`: an anonymous egress is `proxy_suspected` and an
//! egress in another province is `violating_ip` even when no carrier resolves.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::IpAddr;

use lineprobe_shared::{
    CarrierId, Catalog, CityCode, CityKind, Classifier, HopKind, ProvinceCode, ProxyFacts, Report,
};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::validate::prefecture_of;
use crate::{Anonymous, Attributed, DeclaredFacts, IpType, Resolved};

// ───────────────────────────────── input ─────────────────────────────────

/// The proxy settings the device reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeviceProxy {
    /// A system-wide proxy is configured.
    pub system_configured: bool,
    /// A proxy is set in the probe's environment.
    pub env_configured: bool,
}

impl DeviceProxy {
    /// The report's proxy facts.
    pub fn from_facts(facts: &ProxyFacts) -> Self {
        Self {
            system_configured: facts.system_configured,
            env_configured: facts.env_configured,
        }
    }

    fn any(self) -> bool {
        self.system_configured || self.env_configured
    }
}

/// The egress address the receiver saw, and what it resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    /// The address.
    pub ip: IpAddr,
    /// True when the classifier calls it public; a non-public egress
    /// (private, loopback, documentation unless configured public) is never
    /// looked at further.
    pub public: bool,
    /// What the sources know about it.
    pub resolved: Resolved,
}

/// A hop that answered from a public address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicHop {
    /// The hop's TTL.
    pub ttl: u8,
    /// Its public address.
    pub ip: IpAddr,
    /// What the sources know about it.
    pub resolved: Resolved,
}

/// Everything the verdict on one observation rests on. The lead fills it
/// with [`LineEvidence::gather`] or field by field.
#[derive(Debug, Clone)]
pub struct LineEvidence<'a> {
    /// The catalogs (carrier relations, names).
    pub catalog: &'a Catalog,
    /// The declared line, checked against the catalogs.
    pub declared: DeclaredFacts,
    /// The device's proxy settings.
    pub device_proxy: DeviceProxy,
    /// The egress address; `None` when the report carries none.
    pub egress: Option<Egress>,
    /// The public hops of the trace in TTL order, up to (not including) the
    /// destination; the first is the first public hop.
    pub public_hops: Vec<PublicHop>,
    /// The carrier of the trace's destination (the receiver), whose network
    /// ends every path.
    pub target_carrier: Option<Attributed<CarrierId>>,
    /// True when the hop just before the first public hop answered nothing
    /// (or is missing from the trace): the line's own network may not have
    /// answered, so the first public hop may lie further on.
    pub first_public_after_silence: bool,
}

impl<'a> LineEvidence<'a> {
    /// True when an address source failed for one of the addresses (the
    /// others answered without it).
    pub fn sources_failed(&self) -> bool {
        self.public_hops
            .iter()
            .map(|h| &h.resolved)
            .chain(self.egress.as_ref().map(|e| &e.resolved))
            .any(|r| !r.failures.is_empty())
    }

    /// Gathers the evidence from an extracted report: classifies its hops and
    /// its egress with `classifier`, and resolves every public address (the
    /// embedded IPv4 address of a NAT64 or 6to4 form) with `resolve` —
    /// typically `|ip| chain.resolve(catalog, ip)` — once per address.
    pub fn gather<E>(
        report: &Report,
        declared: DeclaredFacts,
        catalog: &'a Catalog,
        classifier: &Classifier,
        resolve: impl FnMut(IpAddr) -> Result<Resolved, E>,
    ) -> Result<Self, E> {
        // First what needs resolving: the public hops, the egress, the
        // target, each with the address to look up; then each distinct
        // address is resolved once (in that order), and its answer moved
        // to its last user and copied only for the others.
        let target = report.trace.target_addr;
        let is_target = |ip: IpAddr| target.is_some_and(|t| t.to_canonical() == ip.to_canonical());
        let mut lookups = Lookups::default();
        let mut hops: Vec<(u8, IpAddr, usize)> = Vec::new();
        // The hop before the first public one: (TTL, whether it answered).
        let mut before_first: Option<(u8, bool)> = None;
        let mut first_public_after_silence = false;
        for hop in classifier.classify_hops(&report.trace.hops, target) {
            match hop.kind {
                HopKind::Public => {
                    let found = hop
                        .addrs
                        .iter()
                        .find(|c| c.is_public() && !is_target(c.addr));
                    if let Some(c) = found {
                        if hops.is_empty() {
                            first_public_after_silence = match before_first {
                                Some((ttl, answered)) => {
                                    !answered || ttl.saturating_add(1) < hop.ttl
                                }
                                None => hop.ttl > 1,
                            };
                        }
                        hops.push((hop.ttl, c.addr, lookups.need(c.effective_addr())));
                    }
                }
                HopKind::Destination => break,
                kind => {
                    if hops.is_empty() {
                        before_first = Some((hop.ttl, kind != HopKind::NoReply));
                    }
                }
            }
        }
        let egress = report.envelope.as_ref().map(|envelope| {
            let c = classifier.classify(envelope.peer_ip);
            let slot = c.is_public().then(|| lookups.need(c.effective_addr()));
            (envelope.peer_ip, c.is_public(), slot)
        });
        let target_slot = match target.map(|t| classifier.classify(t)) {
            Some(c) if c.is_public() => Some(lookups.need(c.effective_addr())),
            _ => None,
        };
        lookups.resolve_all(resolve)?;
        let public_hops = hops
            .into_iter()
            .map(|(ttl, ip, slot)| PublicHop {
                ttl,
                ip,
                resolved: lookups.take(slot),
            })
            .collect();
        let egress = egress.map(|(ip, public, slot)| Egress {
            ip,
            public,
            resolved: slot.map(|s| lookups.take(s)).unwrap_or_default(),
        });
        let target_carrier = target_slot.and_then(|s| lookups.take(s).carrier);
        Ok(Self {
            catalog,
            declared,
            device_proxy: DeviceProxy::from_facts(&report.device.proxy),
            egress,
            public_hops,
            target_carrier,
            first_public_after_silence,
        })
    }
}

/// The distinct addresses a report needs resolved, each with its answer
/// and how many users are still to take it.
#[derive(Default)]
struct Lookups {
    addrs: Vec<IpAddr>,
    answers: Vec<Option<Resolved>>,
    users: Vec<usize>,
}

impl Lookups {
    /// Registers one user of `ip`; returns its slot.
    fn need(&mut self, ip: IpAddr) -> usize {
        if let Some(i) = self.addrs.iter().position(|a| *a == ip) {
            self.users[i] += 1;
            return i;
        }
        self.addrs.push(ip);
        self.users.push(1);
        self.addrs.len() - 1
    }

    /// Resolves every address once, in the order first needed.
    fn resolve_all<E>(
        &mut self,
        mut resolve: impl FnMut(IpAddr) -> Result<Resolved, E>,
    ) -> Result<(), E> {
        self.answers = Vec::with_capacity(self.addrs.len());
        for &ip in &self.addrs {
            self.answers.push(Some(resolve(ip)?));
        }
        Ok(())
    }

    /// The answer for one user: the last one gets it, the others a copy.
    fn take(&mut self, slot: usize) -> Resolved {
        let (Some(users), Some(answer)) = (self.users.get_mut(slot), self.answers.get_mut(slot))
        else {
            return Resolved::default();
        };
        *users = users.saturating_sub(1);
        if *users == 0 {
            answer.take().unwrap_or_default()
        } else {
            answer.clone().unwrap_or_default()
        }
    }
}

// ──────────────────────────────── output ─────────────────────────────────

/// The verdict on a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    /// The traffic leaves through a proxy; the egress says nothing about the
    /// line.
    ProxySuspected,
    /// The line runs on another carrier than declared.
    NonCompliant,
    /// The line is used somewhere other than declared.
    ViolatingIp,
    /// The line is what was declared.
    Compliant,
    /// Nothing resolved to a carrier: no judgement.
    Indeterminate,
}

impl VerdictKind {
    /// The stable `snake_case` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProxySuspected => "proxy_suspected",
            Self::NonCompliant => "non_compliant",
            Self::ViolatingIp => "violating_ip",
            Self::Compliant => "compliant",
            Self::Indeterminate => "indeterminate",
        }
    }
}

impl fmt::Display for VerdictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The check passed (for a proxy signal: checked, not raised).
    Pass,
    /// The check failed.
    Fail,
    /// The check could not be made.
    Unknown,
    /// A proxy signal was raised.
    Signal,
}

impl Outcome {
    /// The stable `snake_case` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Unknown => "unknown",
            Self::Signal => "signal",
        }
    }
}

/// The check a finding is about and, for results, which result; see the
/// module documentation for when each is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FindingCode {
    /// The actual carrier is the declared one.
    CarrierMatch,
    /// The actual carrier is an expected upstream of the declared one.
    CarrierViaExpectedUpstream,
    /// The actual carrier is another one.
    CarrierMismatch,
    /// No carrier resolved for the line.
    CarrierUnknown,
    /// No carrier was declared.
    CarrierUndeclared,
    /// The egress province is the declared one.
    ProvinceMatch,
    /// The egress province is another one.
    ProvinceMismatch,
    /// The egress city is (within) the declared one.
    CityMatch,
    /// The egress city is another one.
    CityMismatch,
    /// The declared city cannot be compared.
    CityUnknown,
    /// The egress resolved to no province.
    RegionUnknown,
    /// Neither a province nor a city was declared.
    RegionUndeclared,
    /// The IP check was not applied to a proxied egress.
    IpCheckSkipped,
    /// Proxy signal: the egress carrier differs from the line's.
    EgressCarrierDiffersFromFirstHop,
    /// Proxy signal: the egress is in a hosting network.
    EgressHosting,
    /// Proxy signal: the egress is flagged anonymous.
    EgressAnonymous,
    /// Proxy signal: the first resolving public hop is in a hosting network.
    FirstHopHosting,
    /// Proxy signal: a proxy is configured on the device.
    DeviceProxy,
    /// Proxy signal: the path changes carrier more than once.
    MultiLevelPath,
    /// The trace reached no public hop.
    NoPublicHop,
    /// The first public hop is in the receiver's network, after silent
    /// hops, and the egress is not: the line's network did not answer.
    FirstHopInReceiverNetwork,
    /// The egress address is not public.
    EgressNotPublic,
    /// The report carries no egress address.
    EgressMissing,
}

impl FindingCode {
    /// The stable `snake_case` code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CarrierMatch => "carrier_match",
            Self::CarrierViaExpectedUpstream => "carrier_via_expected_upstream",
            Self::CarrierMismatch => "carrier_mismatch",
            Self::CarrierUnknown => "carrier_unknown",
            Self::CarrierUndeclared => "carrier_undeclared",
            Self::ProvinceMatch => "province_match",
            Self::ProvinceMismatch => "province_mismatch",
            Self::CityMatch => "city_match",
            Self::CityMismatch => "city_mismatch",
            Self::CityUnknown => "city_unknown",
            Self::RegionUnknown => "region_unknown",
            Self::RegionUndeclared => "region_undeclared",
            Self::IpCheckSkipped => "ip_check_skipped",
            Self::EgressCarrierDiffersFromFirstHop => "egress_carrier_differs_from_first_hop",
            Self::EgressHosting => "egress_hosting",
            Self::EgressAnonymous => "egress_anonymous",
            Self::FirstHopHosting => "first_hop_hosting",
            Self::DeviceProxy => "device_proxy",
            Self::MultiLevelPath => "multi_level_path",
            Self::NoPublicHop => "no_public_hop",
            Self::FirstHopInReceiverNetwork => "first_hop_in_receiver_network",
            Self::EgressNotPublic => "egress_not_public",
            Self::EgressMissing => "egress_missing",
        }
    }
}

impl fmt::Display for FindingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One check's result, with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The check, or its result.
    pub code: FindingCode,
    /// How it came out.
    pub outcome: Outcome,
    /// One English sentence (catalog names may be Chinese).
    pub message: String,
    /// The values compared: declared and actual, addresses, sources.
    pub evidence: FindingEvidence,
}

/// The values a finding compared. Serialized (as the finding's `evidence`)
/// as an object of its fields in alphabetical order, or `null` for
/// [`FindingEvidence::None`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum FindingEvidence {
    /// Nothing to show.
    None,
    /// The egress address the finding is about.
    Egress {
        /// The address.
        egress_ip: IpAddr,
    },
    /// The first public hop that resolves to a carrier.
    PublicHop {
        /// Its carrier.
        carrier: CarrierId,
        /// Its address.
        hop_ip: IpAddr,
        /// The source of the carrier.
        source: String,
        /// The hop's TTL.
        ttl: u8,
        /// The source's data version.
        version: String,
    },
    /// The egress carrier against the first public hop's.
    EgressAndHop {
        /// The egress carrier.
        egress_carrier: CarrierId,
        /// The egress address.
        egress_ip: IpAddr,
        /// The source of the egress carrier.
        egress_source: String,
        /// Its data version.
        egress_version: String,
        /// The hop's carrier.
        hop_carrier: CarrierId,
        /// The hop's address.
        hop_ip: IpAddr,
        /// The source of the hop's carrier.
        hop_source: String,
        /// Its data version.
        hop_version: String,
        /// The hop's TTL.
        ttl: u8,
    },
    /// The egress's network: carrier and IP type.
    EgressNetwork {
        /// The egress carrier.
        carrier: Option<Attributed<CarrierId>>,
        /// The egress address.
        egress_ip: IpAddr,
        /// The egress IP type.
        ip_type: Option<Attributed<IpType>>,
    },
    /// The egress's anonymity flags.
    EgressAnonymous {
        /// The flags.
        anonymous: Attributed<Anonymous>,
        /// The egress address.
        egress_ip: IpAddr,
    },
    /// The public path's carriers.
    Path {
        /// Changes between unrelated carriers.
        carrier_changes: usize,
        /// The hops that resolved to a carrier, in order.
        path: Vec<PathHop>,
    },
    /// The device's proxy settings.
    Device {
        /// A proxy is set in the probe's environment.
        env_configured: bool,
        /// A system-wide proxy is configured.
        system_configured: bool,
    },
    /// The carrier check.
    Carrier {
        /// The line's actual carrier.
        actual: Option<String>,
        /// The declared carrier.
        declared: Option<CarrierId>,
        /// Where the actual carrier came from.
        provenance: Option<Provenance>,
    },
    /// The egress's province where no region was declared.
    EgressProvince {
        /// The egress province.
        actual_province: Attributed<ProvinceCode>,
        /// The egress address.
        egress_ip: IpAddr,
    },
    /// The province check.
    Province {
        /// The egress province.
        actual: ProvinceCode,
        /// The declared province.
        declared: ProvinceCode,
        /// The egress address.
        egress_ip: IpAddr,
        /// The source of the egress province.
        source: String,
        /// Its data version.
        version: String,
    },
    /// A city check that could not be made.
    CityUnknown {
        /// The egress city, when known.
        actual: Option<Attributed<CityCode>>,
        /// The declared city as written.
        declared: String,
        /// Its code, when it names one.
        declared_code: Option<CityCode>,
        /// The egress address.
        egress_ip: IpAddr,
    },
    /// The city check.
    City {
        /// The egress city.
        actual: CityCode,
        /// The declared city as written.
        declared: String,
        /// Its code.
        declared_code: CityCode,
        /// The egress address.
        egress_ip: IpAddr,
        /// The source of the egress city.
        source: String,
        /// Its data version.
        version: String,
    },
}

impl FindingEvidence {
    /// The evidence as a JSON value, as it is stored.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// A public hop on the path, with its carrier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathHop {
    /// Its carrier.
    pub carrier: CarrierId,
    /// Its address.
    pub ip: IpAddr,
    /// Its TTL.
    pub ttl: u8,
}

/// Which address a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IpRole {
    /// The egress address the receiver saw.
    Egress,
    /// The first public hop.
    FirstPublicHop,
    /// A later public hop (the earlier ones resolved to nothing).
    PublicHop,
}

impl IpRole {
    /// The stable `snake_case` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Egress => "egress",
            Self::FirstPublicHop => "first_public_hop",
            Self::PublicHop => "public_hop",
        }
    }
}

/// Where a value came from: the address and the source that gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provenance {
    /// Which address.
    pub role: IpRole,
    /// The address.
    pub ip: IpAddr,
    /// The hop's TTL, for a hop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u8>,
    /// The source's name.
    pub source: String,
    /// The source's data version.
    pub version: String,
}

/// An actual attribute of the line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActualValue {
    /// The catalog id: carrier id, province code, city code.
    pub value: String,
    /// Its name for people (`中国移动 China Mobile`, `广东省`).
    pub name: String,
    /// Where it came from.
    pub provenance: Provenance,
}

/// The line's actual carrier, province and city.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ActualLine {
    /// The carrier: the first resolving public hop's, else the egress's.
    pub carrier: Option<ActualValue>,
    /// The province: the egress's, or — when the egress says nothing about
    /// the line (proxied, not public) — the first public hop's that knows.
    pub province: Option<ActualValue>,
    /// The city, from the same address as the province.
    pub city: Option<ActualValue>,
}

/// A declared attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribute {
    /// The province.
    Province,
    /// The city.
    City,
    /// The carrier.
    Carrier,
}

impl Attribute {
    /// The stable `snake_case` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Province => "province",
            Self::City => "city",
            Self::Carrier => "carrier",
        }
    }
}

/// A declared attribute that was missing and is filled from the actual one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Filled {
    /// Which attribute.
    pub attribute: Attribute,
    /// The value: province code, city code, carrier id.
    pub value: String,
    /// Its name for people.
    pub name: String,
    /// Where it came from.
    pub provenance: Provenance,
}

impl Filled {
    /// The attributes (`province`, `city`, `carrier`) a verdict's stored
    /// fills (`filled` column, JSON) name; none when the JSON is not a list
    /// of fills.
    pub fn attributes_in(filled_json: &str) -> Vec<String> {
        serde_json::from_str::<Vec<serde_json::Value>>(filled_json)
            .unwrap_or_default()
            .iter()
            .filter_map(|f| f.get("attribute").and_then(serde_json::Value::as_str))
            .map(str::to_owned)
            .collect()
    }
}

/// The verdict on one observation of a line, with every check's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// The verdict.
    pub kind: VerdictKind,
    /// The line's actual carrier, province and city.
    pub actual: ActualLine,
    /// Every check's result, in the order made.
    pub reasons: Vec<Finding>,
    /// Missing declared attributes filled from the actual ones.
    pub filled: Vec<Filled>,
    /// Source name → data version of every source that contributed.
    pub data_versions: BTreeMap<String, String>,
    /// Whether the report came from a low-trust source (see
    /// [`crate::TrustPolicy`]); the pipeline sets it after judging. A
    /// verdict from a low-trust source is a different verdict: it is listed
    /// apart.
    pub low_trust: bool,
}

impl Verdict {
    /// A stable hash (SHA-256, hex) of the verdict's content: its kind, each
    /// finding's code and outcome, the actual values and the fills with their
    /// sources, and the data versions. Messages, evidence and addresses are
    /// left out, so repeats of the same verdict over a changing dynamic
    /// address collapse.
    pub fn verdict_key(&self) -> String {
        let mut h = KeyHasher::default();
        h.part(self.kind.as_str());
        h.count(self.reasons.len());
        for f in &self.reasons {
            h.part(f.code.as_str());
            h.part(f.outcome.as_str());
        }
        for actual in [
            &self.actual.carrier,
            &self.actual.province,
            &self.actual.city,
        ] {
            match actual {
                Some(a) => {
                    h.part("some");
                    h.part(&a.value);
                    h.provenance(&a.provenance);
                }
                None => h.part("none"),
            }
        }
        h.count(self.filled.len());
        for f in &self.filled {
            h.part(f.attribute.as_str());
            h.part(&f.value);
            h.provenance(&f.provenance);
        }
        h.count(self.data_versions.len());
        for (source, version) in &self.data_versions {
            h.part(source);
            h.part(version);
        }
        // Only when set, so the keys of earlier verdicts stay as they were.
        if self.low_trust {
            h.part("low_trust");
        }
        h.finish()
    }

    /// The finding with this code, if the verdict has one.
    pub fn finding(&self, code: FindingCode) -> Option<&Finding> {
        self.reasons.iter().find(|f| f.code == code)
    }
}

// ─────────────────────────────── the checks ──────────────────────────────

/// Judges one observation of a line; see the module documentation.
pub fn judge(ev: &LineEvidence<'_>) -> Verdict {
    let mut j = Judge {
        ev,
        cat: ev.catalog,
        findings: Vec::new(),
    };
    let egress = j.observe_egress();
    let hop = j.carrier_hop();
    let suspected = j.assess_proxy(egress, hop.as_ref());
    let carrier = j.actual_carrier(egress, hop.as_ref(), suspected);
    let carrier_failed = j.check_carrier(carrier.as_ref());
    let region = j.check_region(egress, suspected);
    let filled = if region.passed {
        j.fill(&region, carrier.as_ref())
    } else {
        Vec::new()
    };
    let (province, city) = if region.from_egress {
        (region.province, region.city)
    } else {
        j.hop_region()
    };
    let kind = if suspected {
        VerdictKind::ProxySuspected
    } else if carrier_failed {
        VerdictKind::NonCompliant
    } else if region.failed {
        VerdictKind::ViolatingIp
    } else if carrier.is_some() {
        VerdictKind::Compliant
    } else {
        VerdictKind::Indeterminate
    };
    Verdict {
        kind,
        actual: ActualLine {
            carrier: carrier.map(|c| c.actual),
            province,
            city,
        },
        reasons: j.findings,
        filled,
        data_versions: data_versions(ev, egress),
        low_trust: false,
    }
}

/// The first public hop that resolves to a carrier.
struct CarrierHop<'e> {
    hop: &'e PublicHop,
    carrier: &'e Attributed<CarrierId>,
    provenance: Provenance,
}

/// The line's actual carrier, typed and as shown.
struct LineCarrier {
    id: CarrierId,
    actual: ActualValue,
}

/// What the IP check found.
struct RegionCheck {
    /// The check was applied to the egress (public, not proxied).
    from_egress: bool,
    /// It passed: applied, a province resolved, nothing mismatched.
    passed: bool,
    /// It failed: a province or city mismatched.
    failed: bool,
    province: Option<ActualValue>,
    city: Option<ActualValue>,
}

/// A proxy signal's weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strength {
    Strong,
    Weak,
}

struct Judge<'e, 'a> {
    ev: &'e LineEvidence<'a>,
    cat: &'a Catalog,
    findings: Vec<Finding>,
}

impl<'e> Judge<'e, '_> {
    fn push(
        &mut self,
        code: FindingCode,
        outcome: Outcome,
        message: String,
        evidence: FindingEvidence,
    ) {
        self.findings.push(Finding {
            code,
            outcome,
            message,
            evidence,
        });
    }

    /// The egress when it can be judged; records why not otherwise.
    fn observe_egress(&mut self) -> Option<&'e Egress> {
        match &self.ev.egress {
            None => {
                self.push(
                    FindingCode::EgressMissing,
                    Outcome::Unknown,
                    "the report carries no egress address; the IP check cannot be made".to_owned(),
                    FindingEvidence::None,
                );
                None
            }
            Some(e) if !e.public => {
                self.push(
                    FindingCode::EgressNotPublic,
                    Outcome::Unknown,
                    format!(
                        "the egress address {} is not public (a private, loopback or \
                         documentation address), so it resolves to nothing; the IP check \
                         cannot be made",
                        e.ip
                    ),
                    FindingEvidence::Egress { egress_ip: e.ip },
                );
                None
            }
            Some(e) => Some(e),
        }
    }

    fn carrier_hop(&mut self) -> Option<CarrierHop<'e>> {
        let hops = &self.ev.public_hops;
        if hops.is_empty() {
            self.push(
                FindingCode::NoPublicHop,
                Outcome::Unknown,
                "the trace reached no public hop (only private, shared or silent hops before \
                 the destination); the line's carrier can only come from the egress address"
                    .to_owned(),
                FindingEvidence::None,
            );
        }
        let target = self.ev.target_carrier.as_ref().map(|t| &t.value);
        if let Some((skipped, receiver)) =
            target.and_then(|t| Some((self.receiver_network_first(t)?, t)))
        {
            let message = format!(
                "the first public hop that answered, {} (TTL {}), is on {}, the receiver's own \
                 network, as is every public hop after it, and the hops before it did not \
                 answer: the line's own network stayed silent, so the egress address (on \
                 another network) stands for the line",
                skipped.ip,
                skipped.ttl,
                carrier_name(self.cat, receiver)
            );
            let carrier = skipped.resolved.carrier.as_ref();
            let evidence = match carrier {
                Some(c) => FindingEvidence::PublicHop {
                    carrier: c.value.clone(),
                    hop_ip: skipped.ip,
                    source: c.source.clone(),
                    ttl: skipped.ttl,
                    version: c.version.clone(),
                },
                None => FindingEvidence::None,
            };
            self.push(
                FindingCode::FirstHopInReceiverNetwork,
                Outcome::Unknown,
                message,
                evidence,
            );
            return None;
        }
        hops.iter().enumerate().find_map(|(i, hop)| {
            let carrier = hop.resolved.carrier.as_ref()?;
            // A later hop stands in for an unresolved first one only while
            // it is not in the receiver's own network, which ends every path
            // whatever the line: the egress is the better witness then.
            if i > 0 && target == Some(&carrier.value) {
                return None;
            }
            let role = if i == 0 {
                IpRole::FirstPublicHop
            } else {
                IpRole::PublicHop
            };
            Some(CarrierHop {
                hop,
                carrier,
                provenance: provenance(role, hop.ip, Some(hop.ttl), carrier),
            })
        })
    }

    /// The first public hop, when it cannot stand for the line: it came
    /// after hops that did not answer, it and every public hop after it
    /// that resolves are in the receiver's network (`target`), which ends
    /// every path, and the egress resolves to a carrier outside it. A line
    /// on the receiver's own carrier answers from its access network, and
    /// its egress is on that carrier too (or the egress says nothing).
    fn receiver_network_first(&self, target: &CarrierId) -> Option<&'e PublicHop> {
        if !self.ev.first_public_after_silence {
            return None;
        }
        let in_receiver = |c: &CarrierId| {
            c == target
                || self.cat.is_expected_upstream(c, target)
                || self.cat.is_expected_upstream(target, c)
        };
        let first = self.ev.public_hops.first()?;
        let resolved: Vec<&CarrierId> = self
            .ev
            .public_hops
            .iter()
            .filter_map(|h| h.resolved.carrier.as_ref().map(|c| &c.value))
            .collect();
        let first_carrier = &first.resolved.carrier.as_ref()?.value;
        let egress = self
            .ev
            .egress
            .as_ref()
            .filter(|e| e.public)
            .and_then(|e| e.resolved.carrier.as_ref())?;
        (first_carrier == target
            && resolved.iter().all(|c| in_receiver(c))
            && !in_receiver(&egress.value))
        .then_some(first)
    }

    fn is_hosting(&self, carrier: &CarrierId) -> bool {
        self.cat
            .carrier_by_id(carrier)
            .is_some_and(lineprobe_shared::Carrier::is_hosting)
    }

    /// Same carrier, an expected upstream either way, or both within the
    /// declared carrier's family (the declared carrier and its upstreams).
    fn related(&self, a: &CarrierId, b: &CarrierId) -> bool {
        if a == b || self.cat.is_expected_upstream(a, b) || self.cat.is_expected_upstream(b, a) {
            return true;
        }
        self.ev.declared.carrier.as_ref().is_some_and(|d| {
            let in_family = |x: &CarrierId| x == d || self.cat.is_expected_upstream(d, x);
            in_family(a) && in_family(b)
        })
    }

    /// Raises or clears every proxy signal; true when a proxy is suspected.
    fn assess_proxy(&mut self, egress: Option<&Egress>, hop: Option<&CarrierHop<'_>>) -> bool {
        let mut raised = Vec::new();
        raised.extend(self.signal_first_hop_hosting(hop));
        raised.extend(self.signal_egress_differs(egress, hop));
        raised.extend(self.signal_egress_hosting(egress));
        raised.extend(self.signal_egress_anonymous(egress));
        raised.extend(self.signal_multi_level(egress));
        raised.extend(self.signal_device_proxy());
        let strong = raised.iter().filter(|s| **s == Strength::Strong).count();
        strong >= 1 || raised.len() >= 2
    }

    fn signal_first_hop_hosting(&mut self, hop: Option<&CarrierHop<'_>>) -> Option<Strength> {
        let Some(hop) = hop else {
            self.push(
                FindingCode::FirstHopHosting,
                Outcome::Unknown,
                "no public hop resolved to a carrier".to_owned(),
                FindingEvidence::None,
            );
            return None;
        };
        let evidence = FindingEvidence::PublicHop {
            carrier: hop.carrier.value.clone(),
            hop_ip: hop.hop.ip,
            source: hop.carrier.source.clone(),
            ttl: hop.hop.ttl,
            version: hop.carrier.version.clone(),
        };
        if self.is_hosting(&hop.carrier.value) {
            let message = format!(
                "the public hop {} (TTL {}) is in the hosting network {}: the trace itself \
                 left through a tunnel or proxy, so the hops say nothing about the line",
                hop.hop.ip,
                hop.hop.ttl,
                carrier_name(self.cat, &hop.carrier.value)
            );
            self.push(
                FindingCode::FirstHopHosting,
                Outcome::Signal,
                message,
                evidence,
            );
            Some(Strength::Strong)
        } else {
            let kind = match self.cat.carrier_by_id(&hop.carrier.value).map(|c| c.kind) {
                Some(lineprobe_shared::CarrierKind::Research) => "a research and education network",
                _ => "an access network",
            };
            let message = format!(
                "the public hop {} (TTL {}) is on {}, {kind}",
                hop.hop.ip,
                hop.hop.ttl,
                carrier_name(self.cat, &hop.carrier.value)
            );
            self.push(
                FindingCode::FirstHopHosting,
                Outcome::Pass,
                message,
                evidence,
            );
            None
        }
    }

    fn signal_egress_differs(
        &mut self,
        egress: Option<&Egress>,
        hop: Option<&CarrierHop<'_>>,
    ) -> Option<Strength> {
        let code = FindingCode::EgressCarrierDiffersFromFirstHop;
        let egress_carrier = egress.and_then(|e| e.resolved.carrier.as_ref().map(|c| (e, c)));
        let (Some((e, ec)), Some(hop)) = (egress_carrier, hop) else {
            self.push(
                code,
                Outcome::Unknown,
                "the egress carrier and the first public hop's cannot both be resolved, so \
                 they cannot be compared"
                    .to_owned(),
                FindingEvidence::None,
            );
            return None;
        };
        let evidence = FindingEvidence::EgressAndHop {
            egress_carrier: ec.value.clone(),
            egress_ip: e.ip,
            egress_source: ec.source.clone(),
            egress_version: ec.version.clone(),
            hop_carrier: hop.carrier.value.clone(),
            hop_ip: hop.hop.ip,
            hop_source: hop.carrier.source.clone(),
            hop_version: hop.carrier.version.clone(),
            ttl: hop.hop.ttl,
        };
        let (egress_name, hop_name) = (
            carrier_name(self.cat, &ec.value),
            carrier_name(self.cat, &hop.carrier.value),
        );
        if self.related(&ec.value, &hop.carrier.value) {
            let message = if ec.value == hop.carrier.value {
                format!(
                    "the egress {} and the public hop {} are both on {egress_name}",
                    e.ip, hop.hop.ip
                )
            } else if self.cat.is_expected_upstream(&ec.value, &hop.carrier.value)
                || self.cat.is_expected_upstream(&hop.carrier.value, &ec.value)
            {
                format!(
                    "the egress {} is on {egress_name} and the public hop {} on {hop_name}, \
                     an expected upstream relation",
                    e.ip, hop.hop.ip
                )
            } else {
                // Related only through the declared carrier: both are
                // networks its lines leave through (Telecom and Unicom for
                // a Dr.Peng line), neither an upstream of the other.
                let declared = self
                    .ev
                    .declared
                    .carrier
                    .as_ref()
                    .map_or_else(String::new, |d| carrier_name(self.cat, d));
                format!(
                    "the egress {} is on {egress_name} and the public hop {} on {hop_name}: \
                     both are expected upstreams of the declared {declared}",
                    e.ip, hop.hop.ip
                )
            };
            self.push(code, Outcome::Pass, message, evidence);
            None
        } else {
            let message = format!(
                "the egress {} is on {egress_name} but the line's public hop {} (TTL {}) is on \
                 {hop_name}: the traffic leaves through another network than the line's",
                e.ip, hop.hop.ip, hop.hop.ttl
            );
            self.push(code, Outcome::Signal, message, evidence);
            Some(Strength::Strong)
        }
    }

    fn signal_egress_hosting(&mut self, egress: Option<&Egress>) -> Option<Strength> {
        let code = FindingCode::EgressHosting;
        let Some(e) = egress else {
            self.push(
                code,
                Outcome::Unknown,
                "no public egress address to look at".to_owned(),
                FindingEvidence::None,
            );
            return None;
        };
        let carrier = e.resolved.carrier.as_ref();
        let ip_type = e.resolved.ip_type.as_ref();
        let hosting_carrier = carrier.filter(|c| self.is_hosting(&c.value));
        let idc = ip_type.filter(|t| t.value == IpType::Idc);
        let evidence = FindingEvidence::EgressNetwork {
            carrier: carrier.cloned(),
            egress_ip: e.ip,
            ip_type: ip_type.cloned(),
        };
        if let Some(c) = hosting_carrier {
            let message = format!(
                "the egress {} is in the hosting network {} ({} {}): a server, VPS or proxy, \
                 never a subscriber line",
                e.ip,
                carrier_name(self.cat, &c.value),
                c.source,
                c.version
            );
            self.push(code, Outcome::Signal, message, evidence);
            Some(Strength::Strong)
        } else if let Some(t) = idc {
            let message = format!(
                "the egress {} is a data-centre address (IP type idc, {} {}), never a \
                 subscriber line",
                e.ip, t.source, t.version
            );
            self.push(code, Outcome::Signal, message, evidence);
            Some(Strength::Strong)
        } else if carrier.is_some() || ip_type.is_some() {
            let message = format!("the egress {} is not in a hosting network", e.ip);
            self.push(code, Outcome::Pass, message, evidence);
            None
        } else {
            let message = format!(
                "no source knows the egress {}'s carrier or IP type; hosting cannot be ruled \
                 out",
                e.ip
            );
            self.push(code, Outcome::Unknown, message, evidence);
            None
        }
    }

    fn signal_egress_anonymous(&mut self, egress: Option<&Egress>) -> Option<Strength> {
        let code = FindingCode::EgressAnonymous;
        let Some((e, a)) = egress.and_then(|e| e.resolved.anonymous.as_ref().map(|a| (e, a)))
        else {
            self.push(
                code,
                Outcome::Unknown,
                "no source gives anonymity flags for the egress".to_owned(),
                FindingEvidence::None,
            );
            return None;
        };
        let flags = a.value;
        let named: Vec<&str> = [
            (flags.vpn, "an anonymous VPN"),
            (flags.proxy, "a public proxy"),
            (flags.residential_proxy, "a residential proxy"),
            (flags.hosting, "a hosting or VPN provider"),
            (flags.tor, "a Tor exit node"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
        let evidence = FindingEvidence::EgressAnonymous {
            anonymous: a.clone(),
            egress_ip: e.ip,
        };
        if named.is_empty() {
            let message = format!(
                "{} ({}) flags the egress {} as nothing anonymous",
                a.source, a.version, e.ip
            );
            self.push(code, Outcome::Pass, message, evidence);
            None
        } else {
            let message = format!(
                "{} ({}) flags the egress {} as {}",
                a.source,
                a.version,
                e.ip,
                named.join(" and ")
            );
            self.push(code, Outcome::Signal, message, evidence);
            Some(Strength::Strong)
        }
    }

    fn signal_multi_level(&mut self, egress: Option<&Egress>) -> Option<Strength> {
        let code = FindingCode::MultiLevelPath;
        let egress_ip = egress.map(|e| e.ip.to_canonical());
        // The public path up to the egress, when the trace passes it.
        let mut path: Vec<(&PublicHop, &CarrierId)> = Vec::new();
        for hop in &self.ev.public_hops {
            if let Some(c) = &hop.resolved.carrier {
                path.push((hop, &c.value));
            }
            if Some(hop.ip.to_canonical()) == egress_ip {
                break;
            }
        }
        // The receiver's own network ends every path; it is no level.
        if let Some(target) = &self.ev.target_carrier {
            while path.len() > 1 && path.last().is_some_and(|(_, c)| **c == target.value) {
                path.pop();
            }
        }
        if path.is_empty() {
            self.push(
                code,
                Outcome::Unknown,
                "no public hop resolved to a carrier".to_owned(),
                FindingEvidence::None,
            );
            return None;
        }
        let mut changes = 0;
        for pair in path.windows(2) {
            if let [(_, a), (_, b)] = pair
                && !self.related(a, b)
            {
                changes += 1;
            }
        }
        let sequence: Vec<PathHop> = path
            .iter()
            .map(|(hop, c)| PathHop {
                carrier: (*c).clone(),
                ip: hop.ip,
                ttl: hop.ttl,
            })
            .collect();
        let evidence = FindingEvidence::Path {
            carrier_changes: changes,
            path: sequence,
        };
        let names: Vec<String> = path
            .iter()
            .map(|(_, c)| carrier_name(self.cat, c))
            .collect();
        if changes > 1 {
            let message = format!(
                "the path changes carrier {changes} times before the egress ({}): traffic \
                 relayed through several networks",
                names.join(" → ")
            );
            self.push(code, Outcome::Signal, message, evidence);
            Some(Strength::Strong)
        } else {
            let message = format!(
                "the path changes carrier {changes} time{} before the egress",
                if changes == 1 { "" } else { "s" }
            );
            self.push(code, Outcome::Pass, message, evidence);
            None
        }
    }

    fn signal_device_proxy(&mut self) -> Option<Strength> {
        let p = self.ev.device_proxy;
        let evidence = FindingEvidence::Device {
            env_configured: p.env_configured,
            system_configured: p.system_configured,
        };
        if p.any() {
            let which = match (p.system_configured, p.env_configured) {
                (true, true) => "a system proxy and an environment proxy are",
                (true, false) => "a system proxy is",
                _ => "an environment proxy is",
            };
            let message = format!(
                "{which} configured on the device; alone this does not make the egress a \
                 proxy's (the other signals decide)"
            );
            self.push(FindingCode::DeviceProxy, Outcome::Signal, message, evidence);
            Some(Strength::Weak)
        } else {
            self.push(
                FindingCode::DeviceProxy,
                Outcome::Pass,
                "no proxy is configured on the device".to_owned(),
                evidence,
            );
            None
        }
    }

    /// The line's actual carrier: the first resolving public hop's unless
    /// hosting, else a trustworthy egress's.
    fn actual_carrier(
        &self,
        egress: Option<&Egress>,
        hop: Option<&CarrierHop<'_>>,
        suspected: bool,
    ) -> Option<LineCarrier> {
        if let Some(hop) = hop {
            if self.is_hosting(&hop.carrier.value) {
                return None;
            }
            return Some(LineCarrier {
                id: hop.carrier.value.clone(),
                actual: ActualValue {
                    value: hop.carrier.value.to_string(),
                    name: carrier_name(self.cat, &hop.carrier.value),
                    provenance: hop.provenance.clone(),
                },
            });
        }
        if suspected {
            return None;
        }
        let e = egress?;
        let c = e.resolved.carrier.as_ref()?;
        if self.is_hosting(&c.value) {
            return None;
        }
        Some(LineCarrier {
            id: c.value.clone(),
            actual: ActualValue {
                value: c.value.to_string(),
                name: carrier_name(self.cat, &c.value),
                provenance: provenance(IpRole::Egress, e.ip, None, c),
            },
        })
    }

    /// The carrier check; true when it failed.
    fn check_carrier(&mut self, line: Option<&LineCarrier>) -> bool {
        let declared = self.ev.declared.carrier.as_ref();
        let actual = line.map(|l| &l.actual);
        let evidence = FindingEvidence::Carrier {
            actual: actual.map(|a| a.value.clone()),
            declared: declared.cloned(),
            provenance: actual.map(|a| a.provenance.clone()),
        };
        let Some(d) = declared else {
            let message = match actual {
                Some(a) => format!(
                    "no carrier was declared; the line runs on {} ({})",
                    a.name,
                    describe(&a.provenance)
                ),
                None => "no carrier was declared and none resolved".to_owned(),
            };
            self.push(
                FindingCode::CarrierUndeclared,
                Outcome::Unknown,
                message,
                evidence,
            );
            return false;
        };
        let declared_name = carrier_name(self.cat, d);
        let Some(LineCarrier {
            id: actual_id,
            actual: a,
        }) = line
        else {
            let message = format!(
                "declared {declared_name}, but neither a public hop nor the egress resolved to \
                 a carrier of the line"
            );
            self.push(
                FindingCode::CarrierUnknown,
                Outcome::Unknown,
                message,
                evidence,
            );
            return false;
        };
        let from = describe(&a.provenance);
        if actual_id == d {
            let message = format!(
                "declared {declared_name}; the line runs on {}{} ({from})",
                a.name,
                self.subsidiary_note(a)
            );
            self.push(FindingCode::CarrierMatch, Outcome::Pass, message, evidence);
            false
        } else if self.cat.is_expected_upstream(d, actual_id) {
            let message = format!(
                "declared {declared_name}; the line leaves through {}, one of its expected \
                 upstreams ({from})",
                a.name
            );
            self.push(
                FindingCode::CarrierViaExpectedUpstream,
                Outcome::Pass,
                message,
                evidence,
            );
            false
        } else {
            let message = format!(
                "declared {declared_name}, but the line runs on {} ({from})",
                a.name
            );
            self.push(
                FindingCode::CarrierMismatch,
                Outcome::Fail,
                message,
                evidence,
            );
            true
        }
    }

    /// ", via AS9394 (…), a subsidiary network" when the actual carrier's
    /// address is announced by a subsidiary's AS (Tietong for China Mobile).
    fn subsidiary_note(&self, actual: &ActualValue) -> String {
        let resolved = self.resolved_at(&actual.provenance);
        let Some(asn) = resolved.and_then(|r| r.asn.as_ref()) else {
            return String::new();
        };
        let entry = self
            .cat
            .carrier_by_asn(asn.value)
            .filter(|c| c.id.as_str() == actual.value)
            .and_then(|c| c.asns.iter().find(|a| a.asn == asn.value))
            .filter(|a| a.role == lineprobe_shared::AsnRole::Subsidiary);
        match entry {
            Some(a) => format!(
                " via AS{} ({}), a subsidiary network it owns",
                a.asn, a.name
            ),
            None => String::new(),
        }
    }

    fn resolved_at(&self, p: &Provenance) -> Option<&'e Resolved> {
        match p.role {
            IpRole::Egress => self.ev.egress.as_ref().map(|e| &e.resolved),
            IpRole::FirstPublicHop | IpRole::PublicHop => self
                .ev
                .public_hops
                .iter()
                .find(|h| h.ip == p.ip && Some(h.ttl) == p.ttl)
                .map(|h| &h.resolved),
        }
    }

    /// The IP check on the egress.
    fn check_region(&mut self, egress: Option<&Egress>, suspected: bool) -> RegionCheck {
        let mut out = RegionCheck {
            from_egress: false,
            passed: false,
            failed: false,
            province: None,
            city: None,
        };
        let Some(e) = egress else {
            return out;
        };
        if suspected {
            self.push(
                FindingCode::IpCheckSkipped,
                Outcome::Unknown,
                format!(
                    "the egress {} is suspected to be a proxy's; it says nothing about where \
                     the line is, so the IP check is not applied",
                    e.ip
                ),
                FindingEvidence::Egress { egress_ip: e.ip },
            );
            return out;
        }
        out.from_egress = true;
        out.province = e.resolved.province.as_ref().map(|p| ActualValue {
            value: p.value.to_string(),
            name: province_name(self.cat, &p.value),
            provenance: provenance(IpRole::Egress, e.ip, None, p),
        });
        out.city = e.resolved.city.as_ref().map(|c| ActualValue {
            value: c.value.to_string(),
            name: city_name(self.cat, &c.value),
            provenance: provenance(IpRole::Egress, e.ip, None, c),
        });
        let Some(actual_province) = &e.resolved.province else {
            self.push(
                FindingCode::RegionUnknown,
                Outcome::Unknown,
                format!(
                    "no source knows the egress {}'s province; the IP check cannot be made",
                    e.ip
                ),
                FindingEvidence::Egress { egress_ip: e.ip },
            );
            return out;
        };
        let declared = &self.ev.declared;
        if declared.province.is_none() && declared.city.is_none() {
            self.push(
                FindingCode::RegionUndeclared,
                Outcome::Unknown,
                format!(
                    "neither a province nor a city was declared; the egress {} is in {}",
                    e.ip,
                    province_name(self.cat, &actual_province.value)
                ),
                FindingEvidence::EgressProvince {
                    actual_province: actual_province.clone(),
                    egress_ip: e.ip,
                },
            );
        }
        out.failed |= self.check_province(e, actual_province);
        if declared.city.is_some() {
            out.failed |= self.check_city(e);
        }
        out.passed = !out.failed;
        out
    }

    /// The province half of the IP check; true when it failed.
    fn check_province(&mut self, e: &Egress, actual_province: &Attributed<ProvinceCode>) -> bool {
        let declared = &self.ev.declared;
        // A city declared without its province still places the line in
        // that province: the egress is checked against it (a city source
        // knowing nothing must not let the egress of another province pass,
        // nor fill that province in).
        let implied = match (&declared.province, &declared.city_code) {
            (None, Some(city)) => province_of_city(self.cat, city),
            _ => None,
        };
        if let Some(dp) = declared.province.as_ref().or(implied.as_ref()) {
            let evidence = FindingEvidence::Province {
                actual: actual_province.value.clone(),
                declared: dp.clone(),
                egress_ip: e.ip,
                source: actual_province.source.clone(),
                version: actual_province.version.clone(),
            };
            let (d_name, a_name) = (
                province_name(self.cat, dp),
                province_name(self.cat, &actual_province.value),
            );
            let declared_as = if implied.is_some() {
                format!(
                    "the declared city {} is in {d_name}",
                    crate::validate::quote(declared.city.as_deref().unwrap_or_default())
                )
            } else {
                format!("declared {d_name}")
            };
            if *dp == actual_province.value {
                let message = if implied.is_some() {
                    format!("{declared_as}, as is the egress {}", e.ip)
                } else {
                    format!("the egress {} is in the declared province {d_name}", e.ip)
                };
                self.push(FindingCode::ProvinceMatch, Outcome::Pass, message, evidence);
            } else {
                let message = format!(
                    "{declared_as}, but the egress {} is in {a_name} ({} {})",
                    e.ip, actual_province.source, actual_province.version
                );
                self.push(
                    FindingCode::ProvinceMismatch,
                    Outcome::Fail,
                    message,
                    evidence,
                );
                return true;
            }
        }
        false
    }

    /// The city half of the IP check; true when it failed.
    fn check_city(&mut self, e: &Egress) -> bool {
        let declared = &self.ev.declared;
        let text = declared.city.clone().unwrap_or_default();
        let (Some(dc), Some(ac)) = (&declared.city_code, &e.resolved.city) else {
            let message = if declared.city_code.is_none() {
                format!(
                    "the declared city {} names no catalog city, so it cannot be compared",
                    crate::validate::quote(&text)
                )
            } else {
                format!("no source knows the egress {}'s city", e.ip)
            };
            let evidence = FindingEvidence::CityUnknown {
                actual: e.resolved.city.clone(),
                declared: text,
                declared_code: declared.city_code.clone(),
                egress_ip: e.ip,
            };
            self.push(
                FindingCode::CityUnknown,
                Outcome::Unknown,
                message,
                evidence,
            );
            return false;
        };
        let evidence = FindingEvidence::City {
            actual: ac.value.clone(),
            declared: text,
            declared_code: dc.clone(),
            egress_ip: e.ip,
            source: ac.source.clone(),
            version: ac.version.clone(),
        };
        let (d_name, a_name) = (city_name(self.cat, dc), city_name(self.cat, &ac.value));
        if same_city(dc, &ac.value) {
            let message = format!("the egress {} is in the declared city {d_name}", e.ip);
            self.push(FindingCode::CityMatch, Outcome::Pass, message, evidence);
            false
        } else if let Some(m) = same_municipality(self.cat, dc, &ac.value) {
            // A municipality is one city; its districts are listed so that
            // a district given as the city resolves, not to be told apart by
            // address data that rarely places a line to the district.
            let message = format!(
                "declared {d_name}; the egress {} is in {a_name}, in the same municipality {m}",
                e.ip
            );
            self.push(FindingCode::CityMatch, Outcome::Pass, message, evidence);
            false
        } else {
            let message = format!(
                "declared {d_name}, but the egress {} is in {a_name} ({} {})",
                e.ip, ac.source, ac.version
            );
            self.push(FindingCode::CityMismatch, Outcome::Fail, message, evidence);
            true
        }
    }

    /// Fills undeclared attributes from the actual ones (the IP check passed).
    fn fill(&self, region: &RegionCheck, carrier: Option<&LineCarrier>) -> Vec<Filled> {
        let declared = &self.ev.declared;
        let mut out = Vec::new();
        let mut take = |attribute, actual: Option<&ActualValue>| {
            if let Some(a) = actual {
                out.push(Filled {
                    attribute,
                    value: a.value.clone(),
                    name: a.name.clone(),
                    provenance: a.provenance.clone(),
                });
            }
        };
        if declared.province.is_none() {
            take(Attribute::Province, region.province.as_ref());
        }
        if declared.city.is_none() {
            take(Attribute::City, region.city.as_ref());
        }
        if declared.carrier.is_none() {
            // Never a hosting network: `actual_carrier` gives none.
            take(Attribute::Carrier, carrier.map(|c| &c.actual));
        }
        out
    }

    /// Where the line is by its hops, when the egress cannot say: the first
    /// public hop outside hosting networks that resolves to a province; a
    /// later hop only while it is not in the receiver's own network (which
    /// ends every path, and is where the receiver is, not the line).
    fn hop_region(&self) -> (Option<ActualValue>, Option<ActualValue>) {
        let target = self.ev.target_carrier.as_ref().map(|t| &t.value);
        let found = self.ev.public_hops.iter().enumerate().find(|(i, h)| {
            let carrier = h.resolved.carrier.as_ref().map(|c| &c.value);
            h.resolved.province.is_some()
                && !carrier.is_some_and(|c| self.is_hosting(c))
                && !(*i > 0 && target.is_some() && carrier == target)
        });
        let Some((i, hop)) = found else {
            return (None, None);
        };
        let role = if i == 0 {
            IpRole::FirstPublicHop
        } else {
            IpRole::PublicHop
        };
        let province = hop.resolved.province.as_ref().map(|p| ActualValue {
            value: p.value.to_string(),
            name: province_name(self.cat, &p.value),
            provenance: provenance(role, hop.ip, Some(hop.ttl), p),
        });
        let city = hop.resolved.city.as_ref().map(|c| ActualValue {
            value: c.value.to_string(),
            name: city_name(self.cat, &c.value),
            provenance: provenance(role, hop.ip, Some(hop.ttl), c),
        });
        (province, city)
    }
}

/// True when two division codes name the same place or one lies within the
/// other (a district in its city, a city in its municipality).
/// The municipality (Beijing, Tianjin, Shanghai, Chongqing) both codes are
/// in, by name, when they are in one.
fn same_municipality(cat: &Catalog, a: &CityCode, b: &CityCode) -> Option<String> {
    if a.province_digits() != b.province_digits() {
        return None;
    }
    let whole = CityCode::new(&format!("{}0000", a.province_digits())).ok()?;
    cat.city_by_code(&whole)
        .filter(|c| c.kind == CityKind::Municipality)
        .map(|c| format!("{} ({whole})", c.name_zh))
}

fn same_city(a: &CityCode, b: &CityCode) -> bool {
    let ancestors = |c: &CityCode| {
        let mut out = vec![c.clone()];
        out.extend(prefecture_of(c));
        out.extend(
            c.as_str()
                .get(..2)
                .and_then(|p| CityCode::new(&format!("{p}0000")).ok()),
        );
        out
    };
    ancestors(a).contains(b) || ancestors(b).contains(a)
}

fn provenance<T>(role: IpRole, ip: IpAddr, ttl: Option<u8>, from: &Attributed<T>) -> Provenance {
    Provenance {
        role,
        ip,
        ttl,
        source: from.source.clone(),
        version: from.version.clone(),
    }
}

/// "the first public hop 1.2.3.4 (TTL 3), per ipplan 2026-01".
fn describe(p: &Provenance) -> String {
    let at = match (p.role, p.ttl) {
        (IpRole::Egress, _) => format!("the egress {}", p.ip),
        (IpRole::FirstPublicHop, Some(ttl)) => format!("the first public hop {} (TTL {ttl})", p.ip),
        (IpRole::FirstPublicHop, None) => format!("the first public hop {}", p.ip),
        (IpRole::PublicHop, Some(ttl)) => format!("the public hop {} (TTL {ttl})", p.ip),
        (IpRole::PublicHop, None) => format!("the public hop {}", p.ip),
    };
    format!("{at}, per {} {}", p.source, p.version)
}

fn carrier_name(cat: &Catalog, id: &CarrierId) -> String {
    cat.carrier_by_id(id).map_or_else(
        || id.to_string(),
        |c| format!("{} {}", c.name_zh, c.name_en),
    )
}

/// The province a city code is in: the catalog's city, or the province
/// whose GB/T 2260 digits the code starts with.
fn province_of_city(cat: &Catalog, city: &CityCode) -> Option<ProvinceCode> {
    cat.city_by_code(city)
        .map(|c| c.province.clone())
        .or_else(|| cat.province(city.province_digits()).map(|p| p.id.clone()))
}

fn province_name(cat: &Catalog, code: &ProvinceCode) -> String {
    cat.province_by_id(code)
        .map_or_else(|| code.to_string(), |p| format!("{} ({})", p.name_zh, p.id))
}

fn city_name(cat: &Catalog, code: &CityCode) -> String {
    cat.city_by_code(code)
        .or_else(|| prefecture_of(code).and_then(|p| cat.city_by_code(&p)))
        .map_or_else(
            || code.to_string(),
            |c| {
                if c.code.as_ref() == Some(code) {
                    format!("{} ({code})", c.name_zh)
                } else {
                    format!("{code} (in {})", c.name_zh)
                }
            },
        )
}

/// Source → version of every attribute the verdict could have read.
fn data_versions(ev: &LineEvidence<'_>, egress: Option<&Egress>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(e) = egress {
        versions_of(&e.resolved, &mut out);
    }
    for hop in &ev.public_hops {
        versions_of(&hop.resolved, &mut out);
    }
    if let Some(t) = &ev.target_carrier {
        add_version(&mut out, t);
    }
    out
}

fn versions_of(r: &Resolved, out: &mut BTreeMap<String, String>) {
    if let Some(a) = &r.carrier {
        add_version(out, a);
    }
    if let Some(a) = &r.province {
        add_version(out, a);
    }
    if let Some(a) = &r.city {
        add_version(out, a);
    }
    if let Some(a) = &r.asn {
        add_version(out, a);
    }
    if let Some(a) = &r.org {
        add_version(out, a);
    }
    if let Some(a) = &r.ip_type {
        add_version(out, a);
    }
    if let Some(a) = &r.customer {
        add_version(out, a);
    }
    if let Some(a) = &r.anonymous {
        add_version(out, a);
    }
}

fn add_version<T>(out: &mut BTreeMap<String, String>, a: &Attributed<T>) {
    // Most attributes come from a source already recorded: look before
    // allocating the key.
    if !out.contains_key(&a.source) {
        out.insert(a.source.clone(), a.version.clone());
    }
}

// ──────────────────────────────── keys ───────────────────────────────────

/// The line an observation belongs to: `account:<account>`, or
/// `install:<install_id>` when the account is empty (or only spaces). The
/// account is trimmed.
pub fn line_key(account: &str, install_id: &str) -> String {
    let account = account.trim();
    if account.is_empty() {
        format!("install:{install_id}")
    } else {
        format!("account:{account}")
    }
}

/// The identity of an observation (SHA-256, hex): its line, the declared
/// province, city, carrier and account, the egress address and the path
/// (each hop's TTL and the set of addresses that answered at it, in address
/// order: a load-balanced hop lists its routers in whatever order their
/// replies came). Identical observations of the same line get the same key
/// whatever their times, RTTs or report ids; call it on the extracted
/// report, whose hops are parsed from raw text when needed.
///
/// Keys of observations stored before addresses were put in order stay
/// as they were (a report re-decided keeps its observation); a path with
/// several addresses at a hop first seen in another order starts one new
/// observation after the upgrade.
pub fn observation_key(report: &Report) -> String {
    let mut h = KeyHasher::default();
    h.part(&line_key(&report.account, report.install_id.as_str()));
    h.opt(report.declared.province.as_deref());
    h.opt(report.declared.city.as_deref());
    h.opt(report.declared.carrier.as_deref());
    h.part(&report.account);
    // Addresses are hashed in their text form, written into one buffer.
    let mut text = String::with_capacity(48);
    match &report.envelope {
        Some(e) => {
            let _ = write!(text, "{}", e.peer_ip);
            h.opt(Some(&text));
        }
        None => h.opt(None),
    }
    h.count(report.trace.hops.len());
    let mut addrs: Vec<IpAddr> = Vec::new();
    for hop in &report.trace.hops {
        h.count(usize::from(hop.ttl));
        addrs.clear();
        addrs.extend_from_slice(&hop.addrs);
        addrs.sort_unstable();
        addrs.dedup();
        h.count(addrs.len());
        for addr in &addrs {
            text.clear();
            let _ = write!(text, "{addr}");
            h.part(&text);
        }
    }
    h.finish()
}

/// SHA-256 over length-prefixed parts, so no two sequences of parts collide
/// by concatenation.
#[derive(Default)]
struct KeyHasher {
    sha: Sha256,
}

impl KeyHasher {
    fn part(&mut self, s: &str) {
        self.count(s.len());
        self.sha.update(s.as_bytes());
    }

    fn count(&mut self, n: usize) {
        self.sha.update((n as u64).to_le_bytes());
    }

    fn opt(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.sha.update([1]);
                self.part(s);
            }
            None => self.sha.update([0]),
        }
    }

    fn provenance(&mut self, p: &Provenance) {
        self.part(p.role.as_str());
        self.part(&p.source);
        self.part(&p.version);
    }

    fn finish(self) -> String {
        format!("{:x}", self.sha.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> CityCode {
        CityCode::new(s).unwrap()
    }

    #[test]
    fn districts_are_within_their_city_and_municipality() {
        assert!(same_city(&code("440300"), &code("440300")));
        assert!(same_city(&code("440305"), &code("440300")));
        assert!(same_city(&code("440300"), &code("440305")));
        assert!(same_city(&code("110105"), &code("110000")));
        assert!(!same_city(&code("440300"), &code("440100")));
        assert!(!same_city(&code("440305"), &code("440106")));
    }

    #[test]
    fn finding_evidence_is_stored_as_the_objects_readers_know() {
        use serde_json::json;
        let ip: IpAddr = "113.116.32.1".parse().unwrap();
        let carrier = |id: &str| CarrierId::new(id).unwrap();
        assert_eq!(FindingEvidence::None.to_value(), Value::Null);
        assert_eq!(
            FindingEvidence::Egress { egress_ip: ip }.to_value(),
            json!({ "egress_ip": "113.116.32.1" })
        );
        let checked = FindingEvidence::Carrier {
            actual: Some("china_telecom".to_owned()),
            declared: Some(carrier("china_mobile")),
            provenance: Some(Provenance {
                role: IpRole::FirstPublicHop,
                ip,
                ttl: Some(3),
                source: "ipplan".to_owned(),
                version: "2025-01".to_owned(),
            }),
        };
        assert_eq!(
            serde_json::to_string(&checked).unwrap(),
            r#"{"actual":"china_telecom","declared":"china_mobile","provenance":{"role":"first_public_hop","ip":"113.116.32.1","ttl":3,"source":"ipplan","version":"2025-01"}}"#
        );
        let path = FindingEvidence::Path {
            carrier_changes: 2,
            path: vec![PathHop {
                carrier: carrier("china_mobile"),
                ip,
                ttl: 3,
            }],
        };
        assert_eq!(
            path.to_value(),
            json!({
                "carrier_changes": 2,
                "path": [{ "carrier": "china_mobile", "ip": "113.116.32.1", "ttl": 3 }],
            })
        );
        let network = FindingEvidence::EgressNetwork {
            carrier: None,
            egress_ip: ip,
            ip_type: Some(Attributed {
                value: IpType::Idc,
                source: "ipplan".to_owned(),
                version: "2025-01".to_owned(),
            }),
        };
        assert_eq!(
            network.to_value(),
            json!({
                "carrier": null,
                "egress_ip": "113.116.32.1",
                "ip_type": { "value": "idc", "source": "ipplan", "version": "2025-01" },
            })
        );
    }

    #[test]
    fn line_key_prefers_the_account() {
        assert_eq!(line_key("0755123", "GD-1"), "account:0755123");
        assert_eq!(line_key(" 0755123 ", "GD-1"), "account:0755123");
        assert_eq!(line_key("", "GD-1"), "install:GD-1");
        assert_eq!(line_key("  ", "GD-1"), "install:GD-1");
    }

    #[test]
    fn key_parts_do_not_collide_by_concatenation() {
        let key = |parts: &[&str]| {
            let mut h = KeyHasher::default();
            for p in parts {
                h.part(p);
            }
            h.finish()
        };
        assert_ne!(key(&["ab", "c"]), key(&["a", "bc"]));
        assert_eq!(key(&["ab", "c"]), key(&["ab", "c"]));
        assert_eq!(key(&[]).len(), 64);
    }
}
