//! Address classification against the IANA special-purpose registries.
//!
//! Finding the first public hop of a trace, and judging a report's egress
//! address, both need one answer for any address: is it a public unicast
//! address some carrier routes, or one of the many special blocks (home LANs,
//! carrier-grade NAT, documentation, tunnels…) that say nothing about who
//! carries the line? The answer comes from [`SPECIAL_BLOCKS`], the project's
//! own transcription of the IANA IPv4 and IPv6 special-purpose address
//! registries; the most specific block containing an address decides.
//!
//! IPv6 forms that carry an IPv4 address (IPv4-mapped, NAT64, 6to4, Teredo)
//! are unwrapped and the IPv4 address is classified instead: a hop that
//! answers from `64:ff9b::808:808` is the IPv4 router 8.8.8.8 seen through a
//! translator, and its carrier is 8.8.8.8's.
//!
//! The NAT64 local-use prefix `64:ff9b:1::/48` (RFC 8215) is different: an
//! operator carves a network-specific prefix of its choosing out of it, and
//! where RFC 6052 (section 2.2) puts the IPv4 address depends on that
//! prefix's length, which an address alone does not tell. Its addresses are
//! unwrapped only inside a prefix the classifier was given
//! ([`Classifier::with_nat64_prefixes`]), by that prefix's layout
//! ([`nat64_extract`]); elsewhere in the block they are not unwrapped and
//! are classified as what they are, translation addresses
//! ([`AddressClass::Translation`]).
//!
//! Test labs are often numbered from the documentation ranges; a
//! [`ClassifierConfig`] names CIDRs to treat as public there.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Error;

/// What kind of address something is, for the purpose of telling a carrier's
/// public routers from everything else.
///
/// Only [`AddressClass::Public`] names an address whose owner can be looked
/// up; every other class is some kind of non-public address, told apart
/// because the difference is evidence (a `shared` hop means carrier-grade NAT,
/// a `service-continuity` hop means DS-Lite).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AddressClass {
    /// A globally routed unicast address (no special block, or a special
    /// block that is an ordinary routed network such as AS112 or AMT), or an
    /// address inside a configured extra-public CIDR.
    Public,
    /// RFC 1918 private use: home LANs, CPE and carrier-internal hops.
    Private,
    /// RFC 6598 shared address space, 100.64.0.0/10: carrier-grade NAT.
    Shared,
    /// Loopback (127.0.0.0/8, `::1`).
    Loopback,
    /// Link-local (169.254.0.0/16, `fe80::/10`).
    LinkLocal,
    /// Documentation ranges (TEST-NET-1/2/3, `2001:db8::/32`, `3fff::/20`).
    Documentation,
    /// Benchmarking (198.18.0.0/15, `2001:2::/48`); some proxy clients use
    /// 198.18.0.0/15 as "fake IP" addresses.
    Benchmarking,
    /// Multicast (224.0.0.0/4, `ff00::/8`): never a unicast hop.
    Multicast,
    /// IPv6 unique-local addresses, `fc00::/7`: IPv6's private use.
    UniqueLocal,
    /// The unspecified address (0.0.0.0, `::`).
    Unspecified,
    /// "This network", 0.0.0.0/8 (other than 0.0.0.0 itself).
    ThisNetwork,
    /// IETF protocol assignments (192.0.0.0/24, `2001::/23`) not covered by
    /// a more specific block.
    ProtocolAssignment,
    /// The IPv4 service continuity prefix 192.0.0.0/29: DS-Lite or 464XLAT.
    ServiceContinuity,
    /// Dummy addresses (192.0.0.8, `100:0:0:1::/64`) that routers without a
    /// usable address of the family use as ICMP source.
    Dummy,
    /// NAT64/DNS64 discovery names (192.0.0.170, 192.0.0.171), and addresses
    /// of the NAT64 local-use prefix `64:ff9b:1::/48` outside any configured
    /// network-specific prefix (the IPv4 address they carry cannot be read
    /// without the prefix's length).
    Translation,
    /// Globally reachable anycast service addresses (PCP, TURN, DNS-SD SRP)
    /// that answer clients but are never a transit hop.
    AnycastService,
    /// 6to4 and 6a44 relay anycast (192.88.99.0/24): a tunnel indicator.
    TunnelRelay,
    /// Cryptographic identifiers, not locators (ORCHID, ORCHID v2, DETs).
    Identifier,
    /// The IPv6 discard-only block `100::/64`.
    DiscardOnly,
    /// Segment routing (`SRv6`) segment identifiers, `5f00::/16`.
    SegmentRouting,
    /// Deprecated forms: IPv4-compatible IPv6 (`::/96`) and site-local
    /// (`fec0::/10`).
    Deprecated,
    /// Reserved space: 240.0.0.0/4, and IPv6 outside global unicast
    /// `2000::/3` that no more specific block names.
    Reserved,
    /// The limited broadcast address 255.255.255.255.
    Broadcast,
}

impl AddressClass {
    /// The name used in JSON and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private => "private",
            Self::Shared => "shared",
            Self::Loopback => "loopback",
            Self::LinkLocal => "link-local",
            Self::Documentation => "documentation",
            Self::Benchmarking => "benchmarking",
            Self::Multicast => "multicast",
            Self::UniqueLocal => "unique-local",
            Self::Unspecified => "unspecified",
            Self::ThisNetwork => "this-network",
            Self::ProtocolAssignment => "protocol-assignment",
            Self::ServiceContinuity => "service-continuity",
            Self::Dummy => "dummy",
            Self::Translation => "translation",
            Self::AnycastService => "anycast-service",
            Self::TunnelRelay => "tunnel-relay",
            Self::Identifier => "identifier",
            Self::DiscardOnly => "discard-only",
            Self::SegmentRouting => "segment-routing",
            Self::Deprecated => "deprecated",
            Self::Reserved => "reserved",
            Self::Broadcast => "broadcast",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An IPv6 form that carries an IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EmbeddingKind {
    /// IPv4-mapped IPv6, `::ffff:0:0/96` (RFC 4291): the IPv4 address is the
    /// last 32 bits.
    Ipv4Mapped,
    /// The NAT64 well-known prefix `64:ff9b::/96` (RFC 6052): last 32 bits.
    Nat64,
    /// A network-specific NAT64 prefix within the local-use prefix
    /// `64:ff9b:1::/48` (RFC 8215), as configured with its length
    /// ([`Classifier::with_nat64_prefixes`]): the IPv4 address is where RFC
    /// 6052 section 2.2 puts it for that length ([`nat64_extract`]). The
    /// block itself is not unwrapped: nothing says which layout an
    /// unconfigured operator chose.
    Nat64LocalUse,
    /// 6to4, `2002::/16` (RFC 3056): the IPv4 address is bits 16..48.
    #[serde(rename = "6to4")]
    SixToFour,
    /// Teredo, `2001::/32` (RFC 4380): the client's public IPv4 address is the
    /// last 32 bits inverted; the server's is bits 32..64.
    Teredo,
}

impl EmbeddingKind {
    /// The name used in JSON and in the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ipv4Mapped => "ipv4-mapped",
            Self::Nat64 => "nat64",
            Self::Nat64LocalUse => "nat64-local-use",
            Self::SixToFour => "6to4",
            Self::Teredo => "teredo",
        }
    }

    /// True for the forms that mean the IPv6 traffic rides an IPv4 tunnel.
    pub fn is_tunnel(self) -> bool {
        matches!(self, Self::SixToFour | Self::Teredo)
    }

    /// The embedded IPv4 address (and, for Teredo, the server's), taken from
    /// the bits this form keeps it in. The caller has checked the prefix.
    /// A local-use address is read as the /96 layout here; only a
    /// configured prefix of that length is ever read through this.
    fn unwrap(self, v6: Ipv6Addr) -> Embedded {
        let bits = u128::from(v6);
        // Truncating casts are the point here: each takes one 32-bit field.
        #[allow(clippy::cast_possible_truncation)]
        let field = |shift: u32| Ipv4Addr::from((bits >> shift) as u32);
        match self {
            Self::Ipv4Mapped | Self::Nat64 | Self::Nat64LocalUse => Embedded {
                kind: self,
                ipv4: field(0),
                teredo_server: None,
            },
            Self::SixToFour => Embedded {
                kind: self,
                ipv4: field(80),
                teredo_server: None,
            },
            Self::Teredo => Embedded {
                kind: self,
                ipv4: Ipv4Addr::from(!u32::from(field(0))),
                teredo_server: Some(field(64)),
            },
        }
    }
}

impl fmt::Display for EmbeddingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a special block decides for the addresses inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockRule {
    /// Addresses in the block have this class.
    Class(AddressClass),
    /// Addresses in the block carry an IPv4 address, which is classified.
    Unwrap(EmbeddingKind),
}

/// One block of the special-purpose registries, as the project reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SpecialBlock {
    /// The block.
    pub cidr: IpNet,
    /// The registry's name for it.
    pub name: &'static str,
    /// The RFC(s) that define it, as the registry cites them.
    pub rfc: &'static str,
    /// What the block means for classification.
    pub rule: BlockRule,
    /// The registry's "globally reachable" flag; `None` where the registry
    /// says N/A (terminated or tunnel blocks) or where the block is not in
    /// the special-purpose registry at all.
    pub globally_reachable: Option<bool>,
    /// False for blocks taken from other IANA registries (multicast, the IPv6
    /// address-space registry) so that every address gets a reasoned answer.
    pub in_iana_special_registry: bool,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len))
}

const fn v6(s: [u16; 8], len: u8) -> IpNet {
    IpNet::V6(Ipv6Net::new_assert(
        Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
        len,
    ))
}

const fn block(
    cidr: IpNet,
    name: &'static str,
    rfc: &'static str,
    rule: BlockRule,
    globally_reachable: Option<bool>,
) -> SpecialBlock {
    SpecialBlock {
        cidr,
        name,
        rfc,
        rule,
        globally_reachable,
        in_iana_special_registry: true,
    }
}

/// A block from outside the special-purpose registries.
const fn other(
    cidr: IpNet,
    name: &'static str,
    rfc: &'static str,
    class: AddressClass,
) -> SpecialBlock {
    SpecialBlock {
        cidr,
        name,
        rfc,
        rule: BlockRule::Class(class),
        globally_reachable: None,
        in_iana_special_registry: false,
    }
}

use AddressClass as C;
use BlockRule::{Class, Unwrap};

const YES: Option<bool> = Some(true);
const NO: Option<bool> = Some(false);
/// The registry's "N/A": the block's reachability is not a property of the
/// block (tunnels) or the allocation was terminated.
const NA: Option<bool> = None;

/// Every special block the classifier knows, IPv4 then IPv6.
///
/// Source: the IANA IPv4 Special-Purpose Address Registry and IPv6
/// Special-Purpose Address Registry (RFC 6890 and its updates, RFC 8190),
/// as transcribed in `shared/data/iana_special_purpose.csv` of the reference
/// data; plus IPv4 multicast (RFC 5771), and from the IANA IPv6 Address Space
/// registry (RFC 4291) multicast, deprecated site-local, deprecated
/// IPv4-compatible, and the space outside global unicast `2000::/3`.
///
/// Blocks nest (192.0.0.9/32 inside 192.0.0.0/24; AS112-v6 inside
/// `2001::/23`): the block with the longest prefix containing an address
/// decides. An IPv4 address in no block is public; IPv6 outside `2000::/3` is
/// caught by the reserved blocks at the end.
///
/// Where the registry's flag and the classifier's class seem to disagree it
/// is deliberate:
/// - globally reachable service anycast (PCP, TURN, DNS-SD) and identifier
///   blocks (ORCHID v2, DETs) are reachable, yet no router answers a trace
///   from them, so they are not `public`;
/// - the NAT64 well-known prefix is flagged reachable, yet only wraps an
///   IPv4 address: the IPv4 address is what is classified; the local-use
///   prefix's layout is the operator's choice, so its block is a class of
///   its own and only configured prefixes in it unwrap;
/// - the N/A rows (6to4, Teredo, the terminated 6to4 relay anycast and
///   ORCHID) keep N/A here; the tunnels are unwrapped, the terminated blocks
///   are non-public.
// One block per line reads as the registry does; rustfmt would spread each
// over seven lines.
#[rustfmt::skip]
pub static SPECIAL_BLOCKS: &[SpecialBlock] = &[
    // IPv4 special-purpose registry.
    block(v4(0, 0, 0, 0, 8), "\"This network\"", "RFC791 s3.2", Class(C::ThisNetwork), NO),
    block(v4(0, 0, 0, 0, 32), "\"This host on this network\"", "RFC1122 s3.2.1.3", Class(C::Unspecified), NO),
    block(v4(10, 0, 0, 0, 8), "Private-Use", "RFC1918", Class(C::Private), NO),
    block(v4(100, 64, 0, 0, 10), "Shared Address Space", "RFC6598", Class(C::Shared), NO),
    block(v4(127, 0, 0, 0, 8), "Loopback", "RFC1122 s3.2.1.3", Class(C::Loopback), NO),
    block(v4(169, 254, 0, 0, 16), "Link Local", "RFC3927", Class(C::LinkLocal), NO),
    block(v4(172, 16, 0, 0, 12), "Private-Use", "RFC1918", Class(C::Private), NO),
    block(v4(192, 0, 0, 0, 24), "IETF Protocol Assignments", "RFC6890 s2.1", Class(C::ProtocolAssignment), NO),
    block(v4(192, 0, 0, 0, 29), "IPv4 Service Continuity Prefix", "RFC7335", Class(C::ServiceContinuity), NO),
    block(v4(192, 0, 0, 8, 32), "IPv4 dummy address", "RFC7600", Class(C::Dummy), NO),
    block(v4(192, 0, 0, 9, 32), "Port Control Protocol Anycast", "RFC7723", Class(C::AnycastService), YES),
    block(v4(192, 0, 0, 10, 32), "Traversal Using Relays around NAT Anycast", "RFC8155", Class(C::AnycastService), YES),
    block(v4(192, 0, 0, 170, 32), "NAT64/DNS64 Discovery", "RFC8880 s2.2 / RFC7050", Class(C::Translation), NO),
    block(v4(192, 0, 0, 171, 32), "NAT64/DNS64 Discovery", "RFC8880 s2.2 / RFC7050", Class(C::Translation), NO),
    block(v4(192, 0, 2, 0, 24), "Documentation (TEST-NET-1)", "RFC5737", Class(C::Documentation), NO),
    // AS112 and AMT are ordinary routed networks that happen to be registered.
    block(v4(192, 31, 196, 0, 24), "AS112-v4", "RFC7535", Class(C::Public), YES),
    block(v4(192, 52, 193, 0, 24), "AMT", "RFC7450", Class(C::Public), YES),
    // Terminated in 2015 (RFC 7526), hence N/A; a hop here is an old relay.
    block(v4(192, 88, 99, 0, 24), "Deprecated (6to4 Relay Anycast)", "RFC7526", Class(C::TunnelRelay), NA),
    block(v4(192, 88, 99, 2, 32), "6a44-relay anycast address", "RFC6751", Class(C::TunnelRelay), NO),
    block(v4(192, 168, 0, 0, 16), "Private-Use", "RFC1918", Class(C::Private), NO),
    block(v4(192, 175, 48, 0, 24), "Direct Delegation AS112 Service", "RFC7534", Class(C::Public), YES),
    block(v4(198, 18, 0, 0, 15), "Benchmarking", "RFC2544 / RFC6815", Class(C::Benchmarking), NO),
    block(v4(198, 51, 100, 0, 24), "Documentation (TEST-NET-2)", "RFC5737", Class(C::Documentation), NO),
    block(v4(203, 0, 113, 0, 24), "Documentation (TEST-NET-3)", "RFC5737", Class(C::Documentation), NO),
    block(v4(240, 0, 0, 0, 4), "Reserved", "RFC1112 s4", Class(C::Reserved), NO),
    block(v4(255, 255, 255, 255, 32), "Limited Broadcast", "RFC8190 / RFC919 s7", Class(C::Broadcast), NO),
    // IPv4 multicast has its own registry.
    other(v4(224, 0, 0, 0, 4), "Multicast", "RFC5771", C::Multicast),
    // IPv6 special-purpose registry.
    block(v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "Loopback Address", "RFC4291", Class(C::Loopback), NO),
    block(v6([0; 8], 128), "Unspecified Address", "RFC4291", Class(C::Unspecified), NO),
    block(v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96), "IPv4-mapped Address", "RFC4291", Unwrap(EmbeddingKind::Ipv4Mapped), NO),
    block(v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96), "IPv4-IPv6 Translat.", "RFC6052", Unwrap(EmbeddingKind::Nat64), YES),
    block(v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), "Local-Use IPv4/IPv6 Translation", "RFC8215", Class(C::Translation), NO),
    block(v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), "Discard-Only Address Block", "RFC6666", Class(C::DiscardOnly), NO),
    block(v6([0x100, 0, 0, 1, 0, 0, 0, 0], 64), "Dummy IPv6 Prefix", "RFC9780", Class(C::Dummy), NO),
    block(v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), "IETF Protocol Assignments", "RFC2928", Class(C::ProtocolAssignment), NO),
    // Teredo's reachability depends on the client's NAT, hence N/A.
    block(v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), "TEREDO", "RFC4380 / RFC8190", Unwrap(EmbeddingKind::Teredo), NA),
    block(v6([0x2001, 1, 0, 0, 0, 0, 0, 1], 128), "Port Control Protocol Anycast", "RFC7723", Class(C::AnycastService), YES),
    block(v6([0x2001, 1, 0, 0, 0, 0, 0, 2], 128), "Traversal Using Relays around NAT Anycast", "RFC8155", Class(C::AnycastService), YES),
    block(v6([0x2001, 1, 0, 0, 0, 0, 0, 3], 128), "DNS-SD Service Registration Protocol Anycast", "RFC9665", Class(C::AnycastService), YES),
    block(v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48), "Benchmarking", "RFC5180", Class(C::Benchmarking), NO),
    block(v6([0x2001, 3, 0, 0, 0, 0, 0, 0], 32), "AMT", "RFC7450", Class(C::Public), YES),
    block(v6([0x2001, 4, 0x112, 0, 0, 0, 0, 0], 48), "AS112-v6", "RFC7535", Class(C::Public), YES),
    // Terminated in 2014 (RFC 4843 expired), hence N/A.
    block(v6([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28), "Deprecated (previously ORCHID)", "RFC4843", Class(C::Identifier), NA),
    block(v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28), "ORCHIDv2", "RFC7343", Class(C::Identifier), YES),
    block(v6([0x2001, 0x30, 0, 0, 0, 0, 0, 0], 28), "Drone Remote ID Protocol Entity Tags (DETs) Prefix", "RFC9374", Class(C::Identifier), YES),
    block(v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), "Documentation", "RFC3849", Class(C::Documentation), NO),
    // Like Teredo, 6to4 reachability depends on the relay, hence N/A.
    block(v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16), "6to4", "RFC3056", Unwrap(EmbeddingKind::SixToFour), NA),
    block(v6([0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0], 48), "Direct Delegation AS112 Service", "RFC7534", Class(C::Public), YES),
    block(v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), "Documentation", "RFC9637", Class(C::Documentation), NO),
    block(v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16), "Segment Routing (SRv6) SIDs", "RFC9602", Class(C::SegmentRouting), NO),
    block(v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), "Unique-Local", "RFC4193 / RFC8190", Class(C::UniqueLocal), NO),
    block(v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "Link-Local Unicast", "RFC4291", Class(C::LinkLocal), NO),
    // From the IPv6 Address Space registry.
    other(v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), "Site-Local (deprecated)", "RFC3879", C::Deprecated),
    other(v6([0; 8], 96), "IPv4-compatible (deprecated)", "RFC4291 s2.5.5.1", C::Deprecated),
    other(v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "Multicast", "RFC4291", C::Multicast),
    other(v6([0; 8], 3), "Reserved by IETF (outside global unicast 2000::/3)", "RFC4291", C::Reserved),
    other(v6([0x4000, 0, 0, 0, 0, 0, 0, 0], 2), "Reserved by IETF (outside global unicast 2000::/3)", "RFC4291", C::Reserved),
    other(v6([0x8000, 0, 0, 0, 0, 0, 0, 0], 1), "Reserved by IETF (outside global unicast 2000::/3)", "RFC4291", C::Reserved),
];

/// The most specific special block containing `addr`, if any.
pub fn special_block(addr: IpAddr) -> Option<&'static SpecialBlock> {
    let masks = &*BLOCK_MASKS;
    match addr {
        IpAddr::V4(a) => first_containing(&masks.v4, u32::from(a)),
        IpAddr::V6(a) => first_containing(&masks.v6, u128::from(a)),
    }
}

/// The first block of `table` whose network `addr` is in.
fn first_containing<T>(
    table: &[(T, T, &'static SpecialBlock)],
    addr: T,
) -> Option<&'static SpecialBlock>
where
    T: Copy + PartialEq + std::ops::BitAnd<Output = T>,
{
    table
        .iter()
        .find(|&&(net, mask, _)| addr & mask == net)
        .map(|&(_, _, block)| block)
}

/// [`SPECIAL_BLOCKS`] as network and mask integers, per family, the longest
/// prefixes first, so that the first match is the most specific block. The
/// pipeline classifies every address of every trace; `IpNet::contains` over
/// the whole list, both families, was 2.5 % of its CPU.
struct BlockMasks {
    v4: Vec<(u32, u32, &'static SpecialBlock)>,
    v6: Vec<(u128, u128, &'static SpecialBlock)>,
}

static BLOCK_MASKS: std::sync::LazyLock<BlockMasks> = std::sync::LazyLock::new(|| {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut blocks: Vec<&'static SpecialBlock> = SPECIAL_BLOCKS.iter().collect();
    // No block is listed twice (a test says so), so the order among equal
    // prefix lengths cannot matter: they are disjoint.
    blocks.sort_by_key(|b| std::cmp::Reverse(b.cidr.prefix_len()));
    for b in blocks {
        match b.cidr {
            IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.netmask()), b)),
            IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.netmask()), b)),
        }
    }
    BlockMasks { v4, v6 }
});

/// The NAT64 local-use prefix, `64:ff9b:1::/48` (RFC 8215).
pub const NAT64_LOCAL_USE: Ipv6Net =
    Ipv6Net::new_assert(Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48);

/// The prefix lengths RFC 6052 (section 2.2) defines an IPv4-embedded
/// IPv6 address layout for.
pub const RFC6052_PREFIX_LENGTHS: [u8; 6] = [32, 40, 48, 56, 64, 96];

/// The bits of the u-octet, bits 64 to 71, which RFC 6052 layouts other
/// than /96 keep zero and skip.
const U_OCTET: u128 = 0xff << 56;

/// `bits` without its u-octet: 120 bits, the top 8 zero.
fn without_u_octet(bits: u128) -> u128 {
    (bits >> 64 << 56) | (bits & ((1 << 56) - 1))
}

/// The inverse of [`without_u_octet`], the u-octet zero.
fn with_u_octet(v: u128) -> u128 {
    (v >> 56 << 64) | (v & ((1 << 56) - 1))
}

/// The IPv4 address an IPv4-embedded IPv6 address carries under a NAT64
/// prefix of `prefix_len` bits, read as RFC 6052 section 2.2 lays it out:
/// the 32 bits right after the prefix, skipping the u-octet (bits 64-71).
/// `None` for a length RFC 6052 does not define, or, below /96, for an
/// address whose u-octet is not zero (RFC 6052: it MUST be; such an address
/// was not made by a translator).
///
/// The caller has checked that `addr` is inside the prefix.
pub fn nat64_extract(prefix_len: u8, addr: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(addr);
    if prefix_len == 96 {
        return u32::try_from(bits & u128::from(u32::MAX))
            .ok()
            .map(Ipv4Addr::from);
    }
    if !RFC6052_PREFIX_LENGTHS.contains(&prefix_len) || bits & U_OCTET != 0 {
        return None;
    }
    // In the 120 bits without the u-octet the address runs from bit
    // `prefix_len` (the most significant is bit 0) for 32 bits.
    let shift = 120 - u32::from(prefix_len) - 32;
    let v4 = (without_u_octet(bits) >> shift) & u128::from(u32::MAX);
    u32::try_from(v4).ok().map(Ipv4Addr::from)
}

/// The IPv4-embedded IPv6 address of `ipv4` under the NAT64 prefix
/// `prefix`, as RFC 6052 section 2.2 lays it out (suffix and u-octet
/// zero); `None` for a prefix length RFC 6052 does not define.
pub fn nat64_embed(prefix: Ipv6Net, ipv4: Ipv4Addr) -> Option<Ipv6Addr> {
    let len = prefix.prefix_len();
    let network = u128::from(prefix.network());
    let v4 = u128::from(u32::from(ipv4));
    if len == 96 {
        return Some(Ipv6Addr::from(network | v4));
    }
    if !RFC6052_PREFIX_LENGTHS.contains(&len) {
        return None;
    }
    let shift = 120 - u32::from(len) - 32;
    let v = without_u_octet(network) | (v4 << shift);
    Some(Ipv6Addr::from(with_u_octet(v)))
}

/// The special block that decided a classification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchedBlock {
    /// The block.
    #[schemars(with = "String")]
    pub cidr: IpNet,
    /// The registry's name for it.
    pub name: Cow<'static, str>,
    /// The RFC(s) defining it.
    pub rfc: Cow<'static, str>,
}

impl From<&'static SpecialBlock> for MatchedBlock {
    fn from(b: &'static SpecialBlock) -> Self {
        Self {
            cidr: b.cidr,
            name: Cow::Borrowed(b.name),
            rfc: Cow::Borrowed(b.rfc),
        }
    }
}

/// An IPv4 address found inside an IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Embedded {
    /// The IPv6 form it was found in.
    pub kind: EmbeddingKind,
    /// The embedded IPv4 address (for Teredo, the client's public address).
    pub ipv4: Ipv4Addr,
    /// For Teredo, the Teredo server's IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teredo_server: Option<Ipv4Addr>,
}

/// The verdict on one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Classification {
    /// The address as given.
    pub addr: IpAddr,
    /// Its class; for an unwrapped IPv6 address, the embedded IPv4 address's
    /// class.
    pub class: AddressClass,
    /// The special block that decided (for an unwrapped address, the block of
    /// the embedded IPv4 address); absent for an ordinary address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<MatchedBlock>,
    /// The IPv4 address unwrapped from an IPv6 form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded: Option<Embedded>,
    /// True when the address shows an IPv6-over-IPv4 tunnel (6to4, Teredo, a
    /// 6to4/6a44 relay).
    #[serde(default)]
    pub tunnel: bool,
    /// The configured extra-public CIDR that made this address public, when
    /// the registries alone would not have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub public_override: Option<IpNet>,
}

impl Classification {
    /// True when the address is public: a carrier's address whose owner can
    /// be looked up.
    pub fn is_public(&self) -> bool {
        self.class == AddressClass::Public
    }

    /// The address the class was decided for: the embedded IPv4 address
    /// when one was unwrapped, else the address itself. Owner look-ups should
    /// use this.
    pub fn effective_addr(&self) -> IpAddr {
        self.embedded.map_or(self.addr, |e| IpAddr::V4(e.ipv4))
    }
}

/// Classifier settings, as read from a program's configuration file.
///
/// ```toml
/// # A lab numbered from TEST-NET-3 plays the internet.
/// extra_public = ["203.0.113.0/24"]
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// CIDRs to treat as public although the registries say they are not
    /// (labs built on documentation or private ranges). Loopback, multicast,
    /// the carrier-grade NAT's shared space, the unspecified address and the
    /// default route are refused, as are the IPv6 forms that carry them
    /// (IPv4-mapped, NAT64, 6to4, Teredo).
    #[serde(default)]
    pub extra_public: Vec<IpNet>,
}

/// Ranges no lab can sensibly call public, with a word for each.
const REFUSED: &[(IpNet, &str)] = &[
    (v4(127, 0, 0, 0, 8), "loopback"),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    (
        v6([0, 0, 0, 0, 0, 0xffff, 0x7f00, 0], 104),
        "IPv4-mapped loopback",
    ),
    (v4(224, 0, 0, 0, 4), "multicast"),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
    (
        v6([0, 0, 0, 0, 0, 0xffff, 0xe000, 0], 100),
        "IPv4-mapped multicast",
    ),
    // The subscriber side of a carrier-grade NAT: a hop there is inside
    // the access network by definition, however a lab numbers it.
    (
        v4(100, 64, 0, 0, 10),
        "the carrier-grade NAT's shared address space",
    ),
    (
        v6([0, 0, 0, 0, 0, 0xffff, 0x6440, 0], 106),
        "the IPv4-mapped carrier-grade NAT's shared address space",
    ),
    (v4(0, 0, 0, 0, 32), "the unspecified address"),
    (v6([0; 8], 128), "the unspecified address"),
    (
        v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 128),
        "the IPv4-mapped unspecified address",
    ),
];

impl ClassifierConfig {
    /// Checks every setting; the one place the configuration is judged.
    pub fn validate(&self) -> Result<(), Error> {
        for (i, net) in self.extra_public.iter().enumerate() {
            let key = || format!("extra_public[{i}]");
            if net.prefix_len() == 0 {
                return Err(Error::Config {
                    key: key(),
                    reason: format!(
                        "`{net}` is the default route and would make every address public; \
                         list only the lab's own ranges, for example \"203.0.113.0/24\""
                    ),
                });
            }
            if let Some((refused, what)) = REFUSED
                .iter()
                .find(|(refused, _)| net.contains(refused) || refused.contains(net))
            {
                return Err(Error::Config {
                    key: key(),
                    reason: format!(
                        "`{net}` overlaps {what} ({refused}), which is never a public hop; \
                         remove it or use a narrower CIDR that covers only the lab's own \
                         public range"
                    ),
                });
            }
            if let Some(wrapped) = refused_through_a_wrapper(net) {
                let Wrapped {
                    kind,
                    lo,
                    hi,
                    refused,
                    what,
                } = wrapped;
                return Err(Error::Config {
                    key: key(),
                    reason: format!(
                        "`{net}` covers {kind} addresses that carry {lo}-{hi}, which overlaps \
                         {what} ({refused}), never a public hop; list the lab's IPv4 range \
                         instead (its {kind} forms follow it) or a narrower CIDR that carries \
                         only the lab's own public range"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A refused IPv4 range reached through an IPv6 form that carries IPv4
/// addresses.
struct Wrapped {
    kind: EmbeddingKind,
    lo: Ipv4Addr,
    hi: Ipv4Addr,
    refused: IpNet,
    what: &'static str,
}

/// The refused IPv4 range an IPv6 CIDR would make public through a form that
/// carries an IPv4 address (NAT64, 6to4, Teredo…), if any.
///
/// An override covering the IPv6 form makes the address public whatever the
/// embedded IPv4 address is, so `64:ff9b::/96` or `2002::/16` would make
/// NAT64's and 6to4's view of 127.0.0.1 and of the carrier-grade NAT's
/// 100.64.0.1 public although `127.0.0.0/8` and `100.64.0.0/10` are refused.
/// (The IPv4-mapped forms are listed in [`REFUSED`] themselves.)
fn refused_through_a_wrapper(net: &IpNet) -> Option<Wrapped> {
    let IpNet::V6(net) = net else {
        return None;
    };
    SPECIAL_BLOCKS.iter().find_map(|block| {
        let (BlockRule::Unwrap(kind), IpNet::V6(wrapper)) = (block.rule, block.cidr) else {
            return None;
        };
        // Two CIDRs that overlap nest: the longer one is their overlap.
        let overlap = if wrapper.contains(net) {
            *net
        } else if net.contains(&wrapper) {
            wrapper
        } else {
            return None;
        };
        // Every form keeps the IPv4 address in one contiguous field (Teredo
        // inverted), so the overlap's first and last addresses carry the
        // ends of the IPv4 range it covers.
        let first = kind.unwrap(overlap.network()).ipv4;
        let last = kind.unwrap(overlap.broadcast()).ipv4;
        let (lo, hi) = (first.min(last), first.max(last));
        REFUSED.iter().find_map(|&(refused, what)| match refused {
            IpNet::V4(r) if r.network() <= hi && lo <= r.broadcast() => Some(Wrapped {
                kind,
                lo,
                hi,
                refused,
                what,
            }),
            _ => None,
        })
    })
}

/// Classifies addresses: the registries, plus configured extra-public CIDRs.
///
/// `Classifier::default()` applies the registries alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Classifier {
    extra_public: Vec<IpNet>,
    /// Network-specific NAT64 prefixes in `64:ff9b:1::/48`, disjoint.
    nat64_prefixes: Vec<Ipv6Net>,
}

impl Classifier {
    /// A classifier from validated settings. Extra-public CIDRs written with
    /// host bits (`203.0.113.7/24`) are taken as their network.
    pub fn new(config: &ClassifierConfig) -> Result<Self, Error> {
        config.validate()?;
        let mut extra_public: Vec<IpNet> = config.extra_public.iter().map(IpNet::trunc).collect();
        extra_public.sort_unstable();
        extra_public.dedup();
        Ok(Self {
            extra_public,
            nat64_prefixes: Vec::new(),
        })
    }

    /// A classifier that also unwraps the NAT64 network-specific prefixes
    /// `nat64_prefixes` the operator carved out of the local-use prefix
    /// `64:ff9b:1::/48`, each by the RFC 6052 layout of its length (/48,
    /// /56, /64 or /96 fit in the block): `64:ff9b:1:abcd::/96` reads
    /// 192.0.2.33 from `64:ff9b:1:abcd::c000:221`, `64:ff9b:1::/48` from
    /// `64:ff9b:1:c000:2:2100::`. Without a prefix the block's addresses are
    /// not unwrapped. Prefixes written with host bits are refused (the
    /// length is the point), as are overlapping ones and extra-public CIDRs
    /// that would make a wrapped never-public address public.
    pub fn with_nat64_prefixes(
        config: &ClassifierConfig,
        nat64_prefixes: &[Ipv6Net],
    ) -> Result<Self, Error> {
        let mut classifier = Self::new(config)?;
        for (i, prefix) in nat64_prefixes.iter().enumerate() {
            let key = || format!("nat64_prefixes[{i}]");
            let reason = if !RFC6052_PREFIX_LENGTHS.contains(&prefix.prefix_len()) {
                Some(format!(
                    "`{prefix}` is not a NAT64 prefix length RFC 6052 defines (/32, /40, /48, \
                     /56, /64 or /96); give the translator's prefix as configured on it"
                ))
            } else if !NAT64_LOCAL_USE.contains(prefix) {
                Some(format!(
                    "`{prefix}` is not inside the NAT64 local-use prefix {NAT64_LOCAL_USE} \
                     (RFC 8215), the only block whose layout is configured here; the \
                     well-known prefix 64:ff9b::/96 is always unwrapped"
                ))
            } else if prefix.trunc() != *prefix {
                Some(format!(
                    "`{prefix}` has host bits set; write the prefix as the translator has it, \
                     for example {}",
                    prefix.trunc()
                ))
            } else {
                nat64_prefixes
                    .iter()
                    .take(i)
                    .find(|other| other.contains(prefix) || prefix.contains(*other))
                    .map(|other| {
                        format!(
                            "`{prefix}` overlaps `{other}`: an address in both would have two \
                             layouts; list each translator's prefix once"
                        )
                    })
            };
            if let Some(reason) = reason {
                return Err(Error::Config { key: key(), reason });
            }
        }
        for (i, net) in config.extra_public.iter().enumerate() {
            let IpNet::V6(net) = net else { continue };
            for prefix in nat64_prefixes {
                let overlap = if prefix.contains(net) {
                    *net
                } else if net.contains(prefix) {
                    *prefix
                } else {
                    continue;
                };
                let len = prefix.prefix_len();
                // The IPv4 bits follow the prefix in order (the u-octet
                // skipped), so the overlap's ends carry the range's ends;
                // an end with a non-zero u-octet is read with it zeroed.
                let read = |a: Ipv6Addr| {
                    nat64_extract(len, Ipv6Addr::from(u128::from(a) & !U_OCTET))
                        .unwrap_or(Ipv4Addr::UNSPECIFIED)
                };
                let (first, last) = (read(overlap.network()), read(overlap.broadcast()));
                let (lo, hi) = (first.min(last), first.max(last));
                if let Some((refused, what)) = REFUSED.iter().find(|(refused, _)| {
                    matches!(refused, IpNet::V4(r) if r.network() <= hi && lo <= r.broadcast())
                }) {
                    return Err(Error::Config {
                        key: format!("extra_public[{i}]"),
                        reason: format!(
                            "`{net}` covers addresses of the NAT64 prefix {prefix} that carry \
                             {lo}-{hi}, which overlaps {what} ({refused}), never a public hop; \
                             list the lab's IPv4 range instead (its NAT64 forms follow it) or a \
                             narrower CIDR that carries only the lab's own public range"
                        ),
                    });
                }
            }
        }
        let mut prefixes = nat64_prefixes.to_vec();
        prefixes.sort_unstable();
        prefixes.dedup();
        classifier.nat64_prefixes = prefixes;
        Ok(classifier)
    }

    /// The extra-public CIDRs in force.
    pub fn extra_public(&self) -> &[IpNet] {
        &self.extra_public
    }

    /// The configured NAT64 network-specific prefixes.
    pub fn nat64_prefixes(&self) -> &[Ipv6Net] {
        &self.nat64_prefixes
    }

    /// The IPv4 address `v6` carries through a configured NAT64 prefix.
    fn configured_nat64(&self, v6: Ipv6Addr) -> Option<Embedded> {
        let prefix = self.nat64_prefixes.iter().find(|p| p.contains(&v6))?;
        Some(Embedded {
            kind: EmbeddingKind::Nat64LocalUse,
            ipv4: nat64_extract(prefix.prefix_len(), v6)?,
            teredo_server: None,
        })
    }

    /// The verdict on one address.
    pub fn classify(&self, addr: IpAddr) -> Classification {
        let found = special_block(addr);
        let configured = match addr {
            IpAddr::V6(v6) => self.configured_nat64(v6),
            IpAddr::V4(_) => None,
        };
        let rule = match configured {
            Some(embedded) => Some(Ok(embedded)),
            None => found.map(|b| match (b.rule, addr) {
                (BlockRule::Unwrap(kind), IpAddr::V6(v6)) => Ok(kind.unwrap(v6)),
                (rule, _) => Err(rule),
            }),
        };
        let (class, block, embedded) = match rule {
            None => (AddressClass::Public, None, None),
            Some(Err(BlockRule::Class(class))) => (class, found, None),
            Some(Ok(embedded)) => {
                let inner = special_block(IpAddr::V4(embedded.ipv4));
                let class = match inner.map(|b| b.rule) {
                    None => AddressClass::Public,
                    Some(BlockRule::Class(class)) => class,
                    // IPv4 blocks never unwrap (a unit test holds the table
                    // to that); were one to, it would not be public.
                    Some(BlockRule::Unwrap(_)) => AddressClass::Reserved,
                };
                (class, inner, Some(embedded))
            }
            // An IPv4 block that unwraps: see above.
            Some(Err(BlockRule::Unwrap(_))) => (AddressClass::Reserved, found, None),
        };
        let tunnel =
            embedded.is_some_and(|e| e.kind.is_tunnel()) || class == AddressClass::TunnelRelay;
        let mut verdict = Classification {
            addr,
            class,
            block: block.map(MatchedBlock::from),
            embedded,
            tunnel,
            public_override: None,
        };
        if !verdict.is_public() {
            let inner = embedded.map(|e| IpAddr::V4(e.ipv4));
            verdict.public_override = self
                .extra_public
                .iter()
                .find(|net| net.contains(&addr) || inner.is_some_and(|i| net.contains(&i)))
                .copied();
            if verdict.public_override.is_some() {
                verdict.class = AddressClass::Public;
            }
        }
        verdict
    }
}

/// The registries' verdict on one address, with no extra-public CIDRs.
pub fn classify(addr: IpAddr) -> Classification {
    Classifier::default().classify(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_block_is_written_as_its_network() {
        for b in SPECIAL_BLOCKS {
            assert_eq!(b.cidr, b.cidr.trunc(), "{} has host bits set", b.cidr);
        }
    }

    #[test]
    fn no_block_is_listed_twice() {
        for (i, a) in SPECIAL_BLOCKS.iter().enumerate() {
            for b in SPECIAL_BLOCKS.iter().skip(i + 1) {
                assert_ne!(a.cidr, b.cidr, "{} is listed twice", a.cidr);
            }
        }
    }

    #[test]
    fn only_ipv6_blocks_unwrap() {
        for b in SPECIAL_BLOCKS {
            if matches!(b.rule, BlockRule::Unwrap(_)) {
                assert!(matches!(b.cidr, IpNet::V6(_)), "{} unwraps", b.cidr);
            }
        }
    }

    #[test]
    fn the_mask_lookup_finds_what_a_scan_of_every_block_finds() {
        let scan = |addr: IpAddr| {
            SPECIAL_BLOCKS
                .iter()
                .filter(|b| b.cidr.contains(&addr))
                .max_by_key(|b| b.cidr.prefix_len())
                .map(|b| b.cidr)
        };
        let mut addrs: Vec<IpAddr> = Vec::new();
        for b in SPECIAL_BLOCKS {
            // Both ends of every block and the addresses just outside them.
            match b.cidr {
                IpNet::V4(n) => {
                    let (lo, hi) = (u32::from(n.network()), u32::from(n.broadcast()));
                    for a in [lo.wrapping_sub(1), lo, hi, hi.wrapping_add(1)] {
                        addrs.push(IpAddr::V4(a.into()));
                    }
                }
                IpNet::V6(n) => {
                    let (lo, hi) = (u128::from(n.network()), u128::from(n.broadcast()));
                    for a in [lo.wrapping_sub(1), lo, hi, hi.wrapping_add(1)] {
                        addrs.push(IpAddr::V6(a.into()));
                    }
                }
            }
        }
        // And a spread of others, public ones among them.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            addrs.push(IpAddr::V4(Ipv4Addr::from(
                x.to_be_bytes()[..4].try_into().unwrap_or([0; 4]),
            )));
            let hi = u128::from(x) << 64 | u128::from(x.rotate_left(17));
            addrs.push(IpAddr::V6(Ipv6Addr::from(hi)));
        }
        for addr in addrs {
            assert_eq!(special_block(addr).map(|b| b.cidr), scan(addr), "{addr}");
        }
    }

    #[test]
    fn each_block_decides_its_own_ends_unless_a_more_specific_block_does() {
        for b in SPECIAL_BLOCKS {
            for addr in [b.cidr.network(), b.cidr.broadcast()] {
                let decided = special_block(addr).map(|d| d.cidr);
                let more_specific = SPECIAL_BLOCKS
                    .iter()
                    .any(|o| o.cidr.prefix_len() > b.cidr.prefix_len() && o.cidr.contains(&addr));
                if !more_specific {
                    assert_eq!(decided, Some(b.cidr), "{addr} in {}", b.cidr);
                }
            }
        }
    }

    #[test]
    fn globally_reachable_non_public_blocks_are_the_documented_ones() {
        // A block the registry calls globally reachable is public unless it
        // is an anycast service, an identifier block, or a wrapper.
        for b in SPECIAL_BLOCKS
            .iter()
            .filter(|b| b.globally_reachable == Some(true))
        {
            assert!(
                matches!(
                    b.rule,
                    BlockRule::Class(
                        AddressClass::Public
                            | AddressClass::AnycastService
                            | AddressClass::Identifier
                    ) | BlockRule::Unwrap(_)
                ),
                "{} is globally reachable but {:?}",
                b.cidr,
                b.rule
            );
        }
        // And nothing the registry calls not reachable is public.
        for b in SPECIAL_BLOCKS
            .iter()
            .filter(|b| b.globally_reachable == Some(false))
        {
            assert_ne!(b.rule, BlockRule::Class(AddressClass::Public), "{}", b.cidr);
        }
    }

    #[test]
    fn teredo_fields_come_from_the_right_bits() {
        // RFC 4380 section 4 example: server 65.54.227.120, client 192.0.2.45
        // behind port 40000, cone flag set.
        let addr: Ipv6Addr = "2001:0:4136:e378:8000:63bf:3fff:fdd2".parse().unwrap();
        let e = EmbeddingKind::Teredo.unwrap(addr);
        assert_eq!(e.ipv4, Ipv4Addr::new(192, 0, 2, 45));
        assert_eq!(e.teredo_server, Some(Ipv4Addr::new(65, 54, 227, 120)));
    }
}
