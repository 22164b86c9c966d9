//! The first public hop: where the subscriber's line meets its carrier.
//!
//! A trace from a broadband line starts inside the home (the router's
//! private address), often crosses the carrier's own private or CGNAT
//! space, and then reaches the first router with a public address. That
//! router belongs to the carrier that really serves the line, whatever the
//! egress address says: a proxy or VPN changes the egress, not the path to
//! the first public hop. Everything before it is kept, classified, because
//! it is evidence too (CGNAT, DS-Lite, tunnels).

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{AddressClass, Classification, Classifier, Hop};

/// What a hop is, for the walk to the first public hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HopKind {
    /// Nothing answered at this TTL.
    NoReply,
    /// Private use (RFC 1918, IPv6 unique-local): home LAN or carrier-internal.
    Private,
    /// Shared address space (RFC 6598): carrier-grade NAT.
    SharedCgnat,
    /// Answered only from other non-public addresses (link-local, benchmarking,
    /// documentation, DS-Lite…).
    OtherNonPublic,
    /// Answered from a public address that is not the trace's destination.
    Public,
    /// Answered only from the trace's destination (and non-public addresses).
    Destination,
}

impl HopKind {
    /// The name used in JSON and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoReply => "no-reply",
            Self::Private => "private",
            Self::SharedCgnat => "shared-cgnat",
            Self::OtherNonPublic => "other-non-public",
            Self::Public => "public",
            Self::Destination => "destination",
        }
    }
}

impl std::fmt::Display for HopKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One hop with every address it answered from classified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifiedHop {
    /// The hop's TTL.
    pub ttl: u8,
    /// What the hop is, from its addresses taken together.
    pub kind: HopKind,
    /// Each address that answered, in the hop's order.
    #[serde(default)]
    pub addrs: Vec<Classification>,
}

/// The first hop that answered from a public address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FirstPublicHop {
    /// The hop's TTL.
    pub ttl: u8,
    /// The public address: the hop's first public address other than the
    /// destination when it answered from several.
    pub addr: IpAddr,
    /// That address's classification (its embedded IPv4 address, if any, is
    /// the one to look up).
    pub classification: Classification,
    /// The whole hop, every address classified.
    pub hop: ClassifiedHop,
}

/// The outcome of looking for the first public hop, with what was seen on
/// the way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FirstHopAnalysis {
    /// The first public hop; `None` when the trace has none (only private or
    /// silent hops, or the only public reply was the destination's).
    pub first_public: Option<FirstPublicHop>,
    /// Every hop before the first public hop, classified, in TTL order; every
    /// hop walked when there is none.
    pub before: Vec<ClassifiedHop>,
    /// A shared-address-space (CGNAT) address answered before the first
    /// public hop.
    pub cgnat_seen: bool,
    /// A DS-Lite / 464XLAT service-continuity address answered before the
    /// first public hop.
    pub ds_lite_seen: bool,
    /// An address up to and including the first public hop showed an
    /// IPv6-over-IPv4 tunnel (6to4, Teredo, a relay).
    pub tunnel_seen: bool,
    /// Hops with no reply that were skipped on the way.
    pub silent_skipped: usize,
    /// The TTL at which the destination answered, when it did before any
    /// public hop; the walk stops there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_ttl: Option<u8>,
}

impl FirstHopAnalysis {
    /// The first public hop's TTL and address, if there is one.
    pub fn first_public_addr(&self) -> Option<(u8, IpAddr)> {
        self.first_public.as_ref().map(|h| (h.ttl, h.addr))
    }
}

/// Is `addr` the trace's destination? IPv4-mapped forms compare equal to
/// their IPv4 address, as tools print either.
fn is_target(addr: IpAddr, target: Option<IpAddr>) -> bool {
    target.is_some_and(|t| t.to_canonical() == addr.to_canonical())
}

impl Classifier {
    /// Classifies one hop: each address, and the hop as a whole.
    ///
    /// A hop that answered from several addresses (per-flow load balancing)
    /// is as public as its most public address: public beats destination,
    /// which beats CGNAT, which beats private, which beats the rest.
    pub fn classify_hop(&self, hop: &Hop, target: Option<IpAddr>) -> ClassifiedHop {
        let addrs: Vec<Classification> = hop.addrs.iter().map(|&a| self.classify(a)).collect();
        let has = |class: AddressClass| addrs.iter().any(|c| c.class == class);
        let kind = if addrs.is_empty() {
            HopKind::NoReply
        } else if addrs
            .iter()
            .any(|c| c.is_public() && !is_target(c.addr, target))
        {
            HopKind::Public
        } else if addrs.iter().any(|c| is_target(c.addr, target)) {
            HopKind::Destination
        } else if has(AddressClass::Shared) {
            HopKind::SharedCgnat
        } else if has(AddressClass::Private) || has(AddressClass::UniqueLocal) {
            HopKind::Private
        } else {
            HopKind::OtherNonPublic
        };
        ClassifiedHop {
            ttl: hop.ttl,
            kind,
            addrs,
        }
    }

    /// Classifies every hop of a trace, in TTL order.
    pub fn classify_hops(&self, hops: &[Hop], target: Option<IpAddr>) -> Vec<ClassifiedHop> {
        in_ttl_order(hops)
            .map(|h| self.classify_hop(h, target))
            .collect()
    }

    /// Walks a trace to its first public hop.
    ///
    /// Hops are taken in TTL order. Silent, private, CGNAT and other
    /// non-public hops are skipped and recorded. The destination (`target`)
    /// is never the first public hop: its address names the receiver's
    /// network (the collector, a test server), not the subscriber's carrier,
    /// so a trace whose only public reply is the destination's has no first
    /// public hop, and the walk stops where the destination answered.
    pub fn first_public_hop(&self, hops: &[Hop], target: Option<IpAddr>) -> FirstHopAnalysis {
        let mut analysis = FirstHopAnalysis {
            first_public: None,
            before: Vec::new(),
            cgnat_seen: false,
            ds_lite_seen: false,
            tunnel_seen: false,
            silent_skipped: 0,
            destination_ttl: None,
        };
        for hop in in_ttl_order(hops) {
            let classified = self.classify_hop(hop, target);
            analysis.tunnel_seen |= classified.addrs.iter().any(|c| c.tunnel);
            if classified.kind == HopKind::Public {
                let found = classified
                    .addrs
                    .iter()
                    .find(|c| c.is_public() && !is_target(c.addr, target))
                    .cloned();
                // A public hop always has such an address; `if let` keeps
                // the walk total without a panic path.
                if let Some(classification) = found {
                    analysis.first_public = Some(FirstPublicHop {
                        ttl: classified.ttl,
                        addr: classification.addr,
                        classification,
                        hop: classified,
                    });
                    break;
                }
            }
            analysis.cgnat_seen |= classified
                .addrs
                .iter()
                .any(|c| c.class == AddressClass::Shared);
            analysis.ds_lite_seen |= classified
                .addrs
                .iter()
                .any(|c| c.class == AddressClass::ServiceContinuity);
            if classified.kind == HopKind::NoReply {
                analysis.silent_skipped += 1;
            }
            let reached = classified.kind == HopKind::Destination;
            if reached {
                analysis.destination_ttl = Some(classified.ttl);
            }
            analysis.before.push(classified);
            if reached {
                break;
            }
        }
        analysis
    }
}

/// Walks a trace to its first public hop as `classifier` sees addresses
/// (use `&Classifier::default()` for the registries alone); see
/// [`Classifier::first_public_hop`].
pub fn first_public_hop(
    classifier: &Classifier,
    hops: &[Hop],
    target: Option<IpAddr>,
) -> FirstHopAnalysis {
    classifier.first_public_hop(hops, target)
}

/// Every hop of a trace classified, in TTL order; see
/// [`Classifier::classify_hops`].
pub fn classify_hops(
    classifier: &Classifier,
    hops: &[Hop],
    target: Option<IpAddr>,
) -> Vec<ClassifiedHop> {
    classifier.classify_hops(hops, target)
}

/// The hops sorted by TTL (stable, so duplicate TTLs keep their order):
/// parsers emit them in order, but a report is outside input.
fn in_ttl_order(hops: &[Hop]) -> impl Iterator<Item = &Hop> {
    let mut ordered: Vec<&Hop> = hops.iter().collect();
    ordered.sort_by_key(|h| h.ttl);
    ordered.into_iter()
}
