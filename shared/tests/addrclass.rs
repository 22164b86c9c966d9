//! Address classification: every special block at its edges, every
//! unwrapping, the extra-public configuration, and agreement with the
//! reference copy of the IANA registries.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use lineprobe_shared::{
    AddressClass, BlockRule, Classification, Classifier, ClassifierConfig, EmbeddingKind, Error,
    SPECIAL_BLOCKS, classify,
};

use AddressClass::{
    AnycastService, Benchmarking, Broadcast, Deprecated, DiscardOnly, Documentation, Dummy,
    Identifier, LinkLocal, Loopback, Multicast, Private, ProtocolAssignment, Public, Reserved,
    SegmentRouting, ServiceContinuity, Shared, ThisNetwork, Translation, TunnelRelay, UniqueLocal,
    Unspecified,
};

fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("bad test address {s}: {e}"))
}

fn net(s: &str) -> IpNet {
    s.parse()
        .unwrap_or_else(|e| panic!("bad test CIDR {s}: {e}"))
}

/// (address, expected class, the block expected to decide — for an
/// unwrapped address, the embedded IPv4 address's block).
///
/// For each block: its first address, its last address, one inside, and the
/// addresses just outside it on both sides where those mean something.
#[rustfmt::skip]
const CASES: &[(&str, AddressClass, Option<&str>)] = &[
    // 0.0.0.0/8 and 0.0.0.0/32
    ("0.0.0.0", Unspecified, Some("0.0.0.0/32")),
    ("0.0.0.1", ThisNetwork, Some("0.0.0.0/8")),
    ("0.1.2.3", ThisNetwork, Some("0.0.0.0/8")),
    ("0.255.255.255", ThisNetwork, Some("0.0.0.0/8")),
    ("1.0.0.0", Public, None),
    // 10.0.0.0/8
    ("9.255.255.255", Public, None),
    ("10.0.0.0", Private, Some("10.0.0.0/8")),
    ("10.20.30.40", Private, Some("10.0.0.0/8")),
    ("10.255.255.255", Private, Some("10.0.0.0/8")),
    ("11.0.0.0", Public, None),
    // 100.64.0.0/10
    ("100.63.255.255", Public, None),
    ("100.64.0.0", Shared, Some("100.64.0.0/10")),
    ("100.100.1.1", Shared, Some("100.64.0.0/10")),
    ("100.127.255.255", Shared, Some("100.64.0.0/10")),
    ("100.128.0.0", Public, None),
    // 127.0.0.0/8
    ("126.255.255.255", Public, None),
    ("127.0.0.0", Loopback, Some("127.0.0.0/8")),
    ("127.0.0.1", Loopback, Some("127.0.0.0/8")),
    ("127.255.255.255", Loopback, Some("127.0.0.0/8")),
    ("128.0.0.0", Public, None),
    // 169.254.0.0/16
    ("169.253.255.255", Public, None),
    ("169.254.0.0", LinkLocal, Some("169.254.0.0/16")),
    ("169.254.1.1", LinkLocal, Some("169.254.0.0/16")),
    ("169.254.255.255", LinkLocal, Some("169.254.0.0/16")),
    ("169.255.0.0", Public, None),
    // 172.16.0.0/12
    ("172.15.255.255", Public, None),
    ("172.16.0.0", Private, Some("172.16.0.0/12")),
    ("172.20.1.1", Private, Some("172.16.0.0/12")),
    ("172.31.255.255", Private, Some("172.16.0.0/12")),
    ("172.32.0.0", Public, None),
    // 192.0.0.0/24 and its more-specifics
    ("191.255.255.255", Public, None),
    ("192.0.0.0", ServiceContinuity, Some("192.0.0.0/29")),
    ("192.0.0.2", ServiceContinuity, Some("192.0.0.0/29")),
    ("192.0.0.7", ServiceContinuity, Some("192.0.0.0/29")),
    ("192.0.0.8", Dummy, Some("192.0.0.8/32")),
    ("192.0.0.9", AnycastService, Some("192.0.0.9/32")),
    ("192.0.0.10", AnycastService, Some("192.0.0.10/32")),
    ("192.0.0.11", ProtocolAssignment, Some("192.0.0.0/24")),
    ("192.0.0.100", ProtocolAssignment, Some("192.0.0.0/24")),
    ("192.0.0.169", ProtocolAssignment, Some("192.0.0.0/24")),
    ("192.0.0.170", Translation, Some("192.0.0.170/32")),
    ("192.0.0.171", Translation, Some("192.0.0.171/32")),
    ("192.0.0.172", ProtocolAssignment, Some("192.0.0.0/24")),
    ("192.0.0.255", ProtocolAssignment, Some("192.0.0.0/24")),
    ("192.0.1.0", Public, None),
    // 192.0.2.0/24
    ("192.0.1.255", Public, None),
    ("192.0.2.0", Documentation, Some("192.0.2.0/24")),
    ("192.0.2.123", Documentation, Some("192.0.2.0/24")),
    ("192.0.2.255", Documentation, Some("192.0.2.0/24")),
    ("192.0.3.0", Public, None),
    // 192.31.196.0/24: AS112, registered but an ordinary routed network
    ("192.31.195.255", Public, None),
    ("192.31.196.0", Public, Some("192.31.196.0/24")),
    ("192.31.196.1", Public, Some("192.31.196.0/24")),
    ("192.31.196.255", Public, Some("192.31.196.0/24")),
    ("192.31.197.0", Public, None),
    // 192.52.193.0/24: AMT
    ("192.52.192.255", Public, None),
    ("192.52.193.0", Public, Some("192.52.193.0/24")),
    ("192.52.193.9", Public, Some("192.52.193.0/24")),
    ("192.52.193.255", Public, Some("192.52.193.0/24")),
    ("192.52.194.0", Public, None),
    // 192.88.99.0/24 and 192.88.99.2/32
    ("192.88.98.255", Public, None),
    ("192.88.99.0", TunnelRelay, Some("192.88.99.0/24")),
    ("192.88.99.1", TunnelRelay, Some("192.88.99.0/24")),
    ("192.88.99.2", TunnelRelay, Some("192.88.99.2/32")),
    ("192.88.99.3", TunnelRelay, Some("192.88.99.0/24")),
    ("192.88.99.255", TunnelRelay, Some("192.88.99.0/24")),
    ("192.88.100.0", Public, None),
    // 192.168.0.0/16
    ("192.167.255.255", Public, None),
    ("192.168.0.0", Private, Some("192.168.0.0/16")),
    ("192.168.1.1", Private, Some("192.168.0.0/16")),
    ("192.168.255.255", Private, Some("192.168.0.0/16")),
    ("192.169.0.0", Public, None),
    // 192.175.48.0/24: AS112 direct delegation
    ("192.175.47.255", Public, None),
    ("192.175.48.0", Public, Some("192.175.48.0/24")),
    ("192.175.48.6", Public, Some("192.175.48.0/24")),
    ("192.175.48.255", Public, Some("192.175.48.0/24")),
    ("192.175.49.0", Public, None),
    // 198.18.0.0/15
    ("198.17.255.255", Public, None),
    ("198.18.0.0", Benchmarking, Some("198.18.0.0/15")),
    ("198.18.0.5", Benchmarking, Some("198.18.0.0/15")),
    ("198.19.255.255", Benchmarking, Some("198.18.0.0/15")),
    ("198.20.0.0", Public, None),
    // 198.51.100.0/24
    ("198.51.99.255", Public, None),
    ("198.51.100.0", Documentation, Some("198.51.100.0/24")),
    ("198.51.100.77", Documentation, Some("198.51.100.0/24")),
    ("198.51.100.255", Documentation, Some("198.51.100.0/24")),
    ("198.51.101.0", Public, None),
    // 203.0.113.0/24
    ("203.0.112.255", Public, None),
    ("203.0.113.0", Documentation, Some("203.0.113.0/24")),
    ("203.0.113.5", Documentation, Some("203.0.113.0/24")),
    ("203.0.113.255", Documentation, Some("203.0.113.0/24")),
    ("203.0.114.0", Public, None),
    // 224.0.0.0/4
    ("223.255.255.255", Public, None),
    ("224.0.0.0", Multicast, Some("224.0.0.0/4")),
    ("232.1.1.1", Multicast, Some("224.0.0.0/4")),
    ("239.255.255.255", Multicast, Some("224.0.0.0/4")),
    // 240.0.0.0/4 and 255.255.255.255/32
    ("240.0.0.0", Reserved, Some("240.0.0.0/4")),
    ("250.1.2.3", Reserved, Some("240.0.0.0/4")),
    ("255.255.255.254", Reserved, Some("240.0.0.0/4")),
    ("255.255.255.255", Broadcast, Some("255.255.255.255/32")),
    // Ordinary Chinese carrier addresses
    ("202.96.128.86", Public, None),
    ("221.130.33.60", Public, None),

    // ::/128, ::1/128 and ::/96
    ("::", Unspecified, Some("::/128")),
    ("::1", Loopback, Some("::1/128")),
    ("::2", Deprecated, Some("::/96")),
    ("::1.2.3.4", Deprecated, Some("::/96")),
    ("::ffff:ffff", Deprecated, Some("::/96")),
    ("::1:0:0", Reserved, Some("::/3")),
    // ::ffff:0:0/96 (unwrapped: the embedded IPv4 address's block decides)
    ("::fffe:ffff:ffff", Reserved, Some("::/3")),
    ("::ffff:0.0.0.0", Unspecified, Some("0.0.0.0/32")),
    ("::ffff:8.8.8.8", Public, None),
    ("::ffff:192.168.1.1", Private, Some("192.168.0.0/16")),
    ("::ffff:255.255.255.255", Broadcast, Some("255.255.255.255/32")),
    ("::1:0:0:0", Reserved, Some("::/3")),
    // 64:ff9b::/96
    ("64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff", Reserved, Some("::/3")),
    ("64:ff9b::", Unspecified, Some("0.0.0.0/32")),
    ("64:ff9b::8.8.8.8", Public, None),
    ("64:ff9b::100.64.0.1", Shared, Some("100.64.0.0/10")),
    ("64:ff9b::255.255.255.255", Broadcast, Some("255.255.255.255/32")),
    ("64:ff9b::1:0:0", Reserved, Some("::/3")),
    // 64:ff9b:1::/48
    ("64:ff9b:0:ffff:ffff:ffff:ffff:ffff", Reserved, Some("::/3")),
    // Not unwrapped: where the IPv4 address is depends on the prefix length
    // the operator chose (tests/nat64.rs has the configured prefixes).
    ("64:ff9b:1::", Translation, Some("64:ff9b:1::/48")),
    ("64:ff9b:1:abcd::8.8.4.4", Translation, Some("64:ff9b:1::/48")),
    ("64:ff9b:1:ffff:ffff:ffff:10.1.2.3", Translation, Some("64:ff9b:1::/48")),
    ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", Translation, Some("64:ff9b:1::/48")),
    ("64:ff9b:2::", Reserved, Some("::/3")),
    // 100::/64 and 100:0:0:1::/64
    ("ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Reserved, Some("::/3")),
    ("100::", DiscardOnly, Some("100::/64")),
    ("100::1", DiscardOnly, Some("100::/64")),
    ("100::ffff:ffff:ffff:ffff", DiscardOnly, Some("100::/64")),
    ("100:0:0:1::", Dummy, Some("100:0:0:1::/64")),
    ("100:0:0:1::1", Dummy, Some("100:0:0:1::/64")),
    ("100:0:0:1:ffff:ffff:ffff:ffff", Dummy, Some("100:0:0:1::/64")),
    ("100:0:0:2::", Reserved, Some("::/3")),
    // 2001::/23 and its more-specifics (2001::/32 Teredo is below)
    ("2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Public, None),
    ("2001:1::", ProtocolAssignment, Some("2001::/23")),
    ("2001:1::1", AnycastService, Some("2001:1::1/128")),
    ("2001:1::2", AnycastService, Some("2001:1::2/128")),
    ("2001:1::3", AnycastService, Some("2001:1::3/128")),
    ("2001:1::4", ProtocolAssignment, Some("2001::/23")),
    ("2001:1:ffff:ffff:ffff:ffff:ffff:ffff", ProtocolAssignment, Some("2001::/23")),
    ("2001:2::", Benchmarking, Some("2001:2::/48")),
    ("2001:2::42", Benchmarking, Some("2001:2::/48")),
    ("2001:2:0:ffff:ffff:ffff:ffff:ffff", Benchmarking, Some("2001:2::/48")),
    ("2001:2:1::", ProtocolAssignment, Some("2001::/23")),
    ("2001:2:ffff:ffff:ffff:ffff:ffff:ffff", ProtocolAssignment, Some("2001::/23")),
    ("2001:3::", Public, Some("2001:3::/32")),
    ("2001:3:1::1", Public, Some("2001:3::/32")),
    ("2001:3:ffff:ffff:ffff:ffff:ffff:ffff", Public, Some("2001:3::/32")),
    ("2001:4::", ProtocolAssignment, Some("2001::/23")),
    ("2001:4:111:ffff:ffff:ffff:ffff:ffff", ProtocolAssignment, Some("2001::/23")),
    ("2001:4:112::", Public, Some("2001:4:112::/48")),
    ("2001:4:112::1", Public, Some("2001:4:112::/48")),
    ("2001:4:112:ffff:ffff:ffff:ffff:ffff", Public, Some("2001:4:112::/48")),
    ("2001:4:113::", ProtocolAssignment, Some("2001::/23")),
    ("2001:f:ffff:ffff:ffff:ffff:ffff:ffff", ProtocolAssignment, Some("2001::/23")),
    ("2001:10::", Identifier, Some("2001:10::/28")),
    ("2001:18::1", Identifier, Some("2001:10::/28")),
    ("2001:1f:ffff:ffff:ffff:ffff:ffff:ffff", Identifier, Some("2001:10::/28")),
    ("2001:20::", Identifier, Some("2001:20::/28")),
    ("2001:2a::1", Identifier, Some("2001:20::/28")),
    ("2001:2f:ffff:ffff:ffff:ffff:ffff:ffff", Identifier, Some("2001:20::/28")),
    ("2001:30::", Identifier, Some("2001:30::/28")),
    ("2001:35::1", Identifier, Some("2001:30::/28")),
    ("2001:3f:ffff:ffff:ffff:ffff:ffff:ffff", Identifier, Some("2001:30::/28")),
    ("2001:40::", ProtocolAssignment, Some("2001::/23")),
    ("2001:100::", ProtocolAssignment, Some("2001::/23")),
    ("2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", ProtocolAssignment, Some("2001::/23")),
    ("2001:200::", Public, None),
    // 2001:db8::/32
    ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", Public, None),
    ("2001:db8::", Documentation, Some("2001:db8::/32")),
    ("2001:db8::1", Documentation, Some("2001:db8::/32")),
    ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", Documentation, Some("2001:db8::/32")),
    ("2001:db9::", Public, None),
    // 2002::/16 (unwrapped)
    ("2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Public, None),
    ("2002::", Unspecified, Some("0.0.0.0/32")),
    ("2002:808:808::1", Public, None),
    ("2002:c0a8:101::1", Private, Some("192.168.0.0/16")),
    ("2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Broadcast, Some("255.255.255.255/32")),
    ("2003::", Public, None),
    // 2620:4f:8000::/48
    ("2620:4f:7fff:ffff:ffff:ffff:ffff:ffff", Public, None),
    ("2620:4f:8000::", Public, Some("2620:4f:8000::/48")),
    ("2620:4f:8000::42", Public, Some("2620:4f:8000::/48")),
    ("2620:4f:8000:ffff:ffff:ffff:ffff:ffff", Public, Some("2620:4f:8000::/48")),
    ("2620:4f:8001::", Public, None),
    // 3fff::/20
    ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Public, None),
    ("3fff::", Documentation, Some("3fff::/20")),
    ("3fff:123::1", Documentation, Some("3fff::/20")),
    ("3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", Documentation, Some("3fff::/20")),
    ("3fff:1000::", Public, None),
    // Reserved space outside 2000::/3
    ("1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Reserved, Some("::/3")),
    ("2000::", Public, None),
    ("3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Public, None),
    ("4000::", Reserved, Some("4000::/2")),
    ("7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Reserved, Some("4000::/2")),
    ("8000::", Reserved, Some("8000::/1")),
    ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Reserved, Some("8000::/1")),
    // 5f00::/16
    ("5eff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Reserved, Some("4000::/2")),
    ("5f00::", SegmentRouting, Some("5f00::/16")),
    ("5f00:1:2::3", SegmentRouting, Some("5f00::/16")),
    ("5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff", SegmentRouting, Some("5f00::/16")),
    ("5f01::", Reserved, Some("4000::/2")),
    // fc00::/7
    ("fc00::", UniqueLocal, Some("fc00::/7")),
    ("fd12:3456:789a::1", UniqueLocal, Some("fc00::/7")),
    ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", UniqueLocal, Some("fc00::/7")),
    ("fe00::", Reserved, Some("8000::/1")),
    // fe80::/10
    ("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Reserved, Some("8000::/1")),
    ("fe80::", LinkLocal, Some("fe80::/10")),
    ("fe80::1", LinkLocal, Some("fe80::/10")),
    ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", LinkLocal, Some("fe80::/10")),
    // fec0::/10
    ("fec0::", Deprecated, Some("fec0::/10")),
    ("fec0::1", Deprecated, Some("fec0::/10")),
    ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Deprecated, Some("fec0::/10")),
    // ff00::/8
    ("ff00::", Multicast, Some("ff00::/8")),
    ("ff02::1", Multicast, Some("ff00::/8")),
    ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Multicast, Some("ff00::/8")),
    // Ordinary Chinese carrier addresses
    ("240e:1::1", Public, None),
    ("2409:8000::1", Public, None),
];

/// Teredo addresses: (address, class of the client, client, server).
#[rustfmt::skip]
const TEREDO: &[(&str, AddressClass, &str, &str)] = &[
    ("2001::", Broadcast, "255.255.255.255", "0.0.0.0"),
    // RFC 4380 section 4's example.
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Documentation, "192.0.2.45", "65.54.227.120"),
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", Public, "8.8.8.8", "65.54.227.120"),
    ("2001:0:ffff:ffff:ffff:ffff:ffff:ffff", Unspecified, "0.0.0.0", "255.255.255.255"),
];

#[test]
fn every_case_is_classified_as_the_registries_say() {
    let mut wrong = Vec::new();
    for &(addr, class, block) in CASES {
        let c = classify(ip(addr));
        let got_block = c.block.as_ref().map(|b| b.cidr);
        if c.class != class || got_block != block.map(net) || c.addr != ip(addr) {
            wrong.push(format!(
                "{addr}: expected {class} in {block:?}, got {} in {got_block:?}",
                c.class
            ));
        }
        assert_eq!(c.is_public(), class == Public, "{addr}");
        assert!(c.public_override.is_none(), "{addr}");
    }
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn every_block_of_the_table_is_exercised() {
    let named: BTreeSet<IpNet> = CASES.iter().filter_map(|c| c.2).map(net).collect();
    let kinds: std::collections::HashSet<EmbeddingKind> = CASES
        .iter()
        .map(|c| c.0)
        .chain(TEREDO.iter().map(|t| t.0))
        .filter_map(|a| classify(ip(a)).embedded)
        .map(|e| e.kind)
        .collect();
    for block in SPECIAL_BLOCKS {
        match block.rule {
            BlockRule::Class(_) => {
                assert!(named.contains(&block.cidr), "no case for {}", block.cidr);
            }
            BlockRule::Unwrap(kind) => {
                assert!(
                    kinds.contains(&kind),
                    "no case unwraps {kind} ({})",
                    block.cidr
                );
            }
        }
    }
}

#[test]
fn ipv4_mapped_and_nat64_unwrap_without_a_tunnel() {
    for (addr, kind, v4) in [
        ("::ffff:8.8.8.8", EmbeddingKind::Ipv4Mapped, "8.8.8.8"),
        ("::ffff:100.64.0.1", EmbeddingKind::Ipv4Mapped, "100.64.0.1"),
        ("64:ff9b::808:808", EmbeddingKind::Nat64, "8.8.8.8"),
        ("64:ff9b::c0a8:101", EmbeddingKind::Nat64, "192.168.1.1"),
    ] {
        let c = classify(ip(addr));
        let e = c.embedded.unwrap_or_else(|| panic!("{addr} not unwrapped"));
        assert_eq!(e.kind, kind, "{addr}");
        assert_eq!(IpAddr::V4(e.ipv4), ip(v4), "{addr}");
        assert_eq!(e.teredo_server, None, "{addr}");
        assert!(!c.tunnel, "{addr}");
        assert_eq!(c.effective_addr(), ip(v4));
        assert_eq!(c.class, classify(ip(v4)).class, "{addr} vs {v4}");
    }
}

#[test]
fn sixtofour_unwraps_bits_16_to_48_and_marks_a_tunnel() {
    for (addr, v4) in [
        ("2002:808:808::1", "8.8.8.8"),
        ("2002:cb00:7105:1234:5678::9", "203.0.113.5"),
        ("2002:6440:1::", "100.64.0.1"),
    ] {
        let c = classify(ip(addr));
        let e = c.embedded.unwrap_or_else(|| panic!("{addr} not unwrapped"));
        assert_eq!(e.kind, EmbeddingKind::SixToFour);
        assert_eq!(IpAddr::V4(e.ipv4), ip(v4), "{addr}");
        assert!(c.tunnel, "{addr}");
        assert_eq!(c.class, classify(ip(v4)).class, "{addr}");
    }
}

#[test]
fn teredo_unwraps_the_inverted_client_and_the_server() {
    for &(addr, class, client, server) in TEREDO {
        let c = classify(ip(addr));
        let e = c.embedded.unwrap_or_else(|| panic!("{addr} not unwrapped"));
        assert_eq!(e.kind, EmbeddingKind::Teredo, "{addr}");
        assert_eq!(IpAddr::V4(e.ipv4), ip(client), "{addr}");
        assert_eq!(e.teredo_server.map(IpAddr::V4), Some(ip(server)), "{addr}");
        assert_eq!(c.class, class, "{addr}");
        assert!(c.tunnel, "{addr}");
    }
    // 2001:1:: is just past Teredo's /32: protocol assignment, no unwrapping.
    let past = classify(ip("2001:1::"));
    assert!(past.embedded.is_none() && !past.tunnel);
}

#[test]
fn relays_mark_a_tunnel_and_plain_addresses_do_not() {
    assert!(classify(ip("192.88.99.1")).tunnel);
    assert!(classify(ip("192.88.99.2")).tunnel);
    for addr in ["8.8.8.8", "192.168.1.1", "2400:3200::1", "::ffff:1.1.1.1"] {
        assert!(!classify(ip(addr)).tunnel, "{addr}");
    }
}

#[test]
fn classification_serializes_in_kebab_case() {
    let json = serde_json::to_value(classify(ip("2002:c0a8:101::1"))).unwrap();
    assert_eq!(json["class"], "private");
    assert_eq!(json["embedded"]["kind"], "6to4");
    assert_eq!(json["embedded"]["ipv4"], "192.168.1.1");
    assert_eq!(json["block"]["cidr"], "192.168.0.0/16");
    assert_eq!(json["block"]["rfc"], "RFC1918");
    assert_eq!(json["tunnel"], true);
    assert!(json.get("public_override").is_none());

    let json = serde_json::to_value(classify(ip("100.64.1.1"))).unwrap();
    assert_eq!(json["class"], "shared");
    assert!(json.get("embedded").is_none());

    let c = classify(ip("64:ff9b::808:808"));
    let back: Classification = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
    assert_eq!(back, c);
}

#[test]
fn class_names_match_serde() {
    for &(addr, class, _) in CASES {
        let json = serde_json::to_value(class).unwrap();
        assert_eq!(json, class.as_str(), "{addr}");
        assert_eq!(class.to_string(), class.as_str());
    }
}

// ---- configuration ----

fn lab(cidrs: &[&str]) -> Result<Classifier, Error> {
    Classifier::new(&ClassifierConfig {
        extra_public: cidrs.iter().map(|s| net(s)).collect(),
    })
}

#[test]
fn documentation_ranges_are_not_public_by_default() {
    for addr in [
        "192.0.2.1",
        "198.51.100.1",
        "203.0.113.1",
        "2001:db8::1",
        "3fff::1",
    ] {
        assert!(!classify(ip(addr)).is_public(), "{addr}");
        assert!(
            !Classifier::default().classify(ip(addr)).is_public(),
            "{addr}"
        );
    }
}

#[test]
fn extra_public_makes_a_lab_range_public_and_says_so() {
    let classifier = lab(&["203.0.113.0/24", "2001:db8:1::/48"]).unwrap();
    let c = classifier.classify(ip("203.0.113.5"));
    assert!(c.is_public());
    assert_eq!(c.public_override, Some(net("203.0.113.0/24")));
    // The registry's view is still on record.
    assert_eq!(c.block.map(|b| b.cidr), Some(net("203.0.113.0/24")));

    // The same address wrapped in IPv6 follows its IPv4 address.
    let c = classifier.classify(ip("64:ff9b::203.0.113.5"));
    assert!(c.is_public());
    assert_eq!(c.public_override, Some(net("203.0.113.0/24")));

    assert!(classifier.classify(ip("2001:db8:1::9")).is_public());
    assert!(!classifier.classify(ip("2001:db8:2::9")).is_public());
    // Neighbouring documentation ranges stay non-public.
    assert!(!classifier.classify(ip("198.51.100.1")).is_public());
    assert!(!classifier.classify(ip("192.0.2.1")).is_public());
    // Addresses that were public already are not overrides.
    let c = classifier.classify(ip("8.8.8.8"));
    assert!(c.is_public() && c.public_override.is_none());
}

#[test]
fn extra_public_cidrs_are_normalised() {
    let classifier = lab(&["203.0.113.7/24", "203.0.113.0/24"]).unwrap();
    assert_eq!(classifier.extra_public(), &[net("203.0.113.0/24")]);
    assert!(classifier.classify(ip("203.0.113.200")).is_public());
}

#[test]
fn extra_public_refuses_what_is_never_public() {
    for (cidr, words) in [
        ("0.0.0.0/0", "default route"),
        ("::/0", "default route"),
        ("127.0.0.0/8", "loopback"),
        ("127.0.0.1/32", "loopback"),
        ("0.0.0.0/1", "loopback"),
        ("::1/128", "loopback"),
        ("::ffff:127.0.0.1/128", "loopback"),
        ("224.0.0.0/24", "multicast"),
        ("128.0.0.0/1", "multicast"),
        ("ff02::/16", "multicast"),
        ("0.0.0.0/32", "unspecified"),
        ("0.0.0.0/8", "unspecified"),
        ("::/128", "unspecified"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("100.100.1.0/24", "carrier-grade NAT"),
        ("::ffff:100.64.0.0/112", "carrier-grade NAT"),
    ] {
        let err = lab(&["203.0.113.0/24", cidr]).expect_err(cidr);
        let Error::Config { key, reason } = &err else {
            panic!("{cidr}: expected a configuration error, got {err}");
        };
        assert_eq!(key, "extra_public[1]", "{cidr}");
        assert!(reason.contains(words), "{cidr}: {reason}");
        assert!(reason.contains(cidr), "{cidr}: {reason}");
        assert!(err.to_string().contains("extra_public[1]"));
    }
}

#[test]
fn extra_public_accepts_lab_ranges() {
    for cidr in [
        "203.0.113.0/24",
        "10.0.0.0/8",
        "2001:db8::/32",
        "1.2.3.4/32",
    ] {
        assert!(lab(&[cidr]).is_ok(), "{cidr}");
    }
}

#[test]
fn config_reads_from_toml_and_rejects_unknown_keys() {
    let config: ClassifierConfig =
        toml::from_str("extra_public = [\"203.0.113.0/24\", \"2001:db8::/32\"]").unwrap();
    assert_eq!(
        config.extra_public,
        vec![net("203.0.113.0/24"), net("2001:db8::/32")]
    );
    let empty: ClassifierConfig = toml::from_str("").unwrap();
    assert_eq!(empty, ClassifierConfig::default());
    assert!(toml::from_str::<ClassifierConfig>("extra_publik = []").is_err());
    assert!(toml::from_str::<ClassifierConfig>("extra_public = [\"203.0.113.0/33\"]").is_err());
}

// ---- agreement with the reference copy of the registries ----

/// Splits one CSV line, honouring double quotes (`""` is a quote).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(ch) = chars.next() {
        match (ch, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[test]
fn table_agrees_with_the_reference_registry_copy() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/iana_special_purpose.csv"
    );
    let Ok(text) = std::fs::read_to_string(path) else {
        assert!(
            std::env::var_os("LINEPROBE_REQUIRE_SAMPLES").is_none(),
            "LINEPROBE_REQUIRE_SAMPLES is set but {path} cannot be read"
        );
        eprintln!("skipped: {path} not found beside the repository");
        return;
    };
    let mut lines = text.lines();
    let header = csv_fields(lines.next().unwrap_or_default());
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    let (c_cidr, c_reach, c_in) = (
        col("cidr"),
        col("globally_reachable"),
        col("in_iana_special_registry"),
    );
    let mut in_csv = BTreeSet::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f = csv_fields(line);
        let cidr = net(&f[c_cidr]);
        assert!(in_csv.insert(cidr), "{cidr} is twice in the CSV");
        let block = SPECIAL_BLOCKS
            .iter()
            .find(|b| b.cidr == cidr)
            .unwrap_or_else(|| panic!("{cidr} is in the CSV but not in SPECIAL_BLOCKS"));
        // The CSV writes the flag as True/False, and as "N/A" (sometimes with
        // a note such as "N/A (terminated 2015-03)") for blocks whose
        // reachability the registry does not state: tunnels and terminated
        // allocations; blocks from other registries say "n/a". The table
        // keeps all of those as None rather than guessing.
        let reach = f[c_reach].trim();
        let expected = match reach {
            "True" => Some(true),
            "False" => Some(false),
            other if other.to_ascii_lowercase().starts_with("n/a") => None,
            other => panic!("{cidr}: unexpected globally_reachable {other:?}"),
        };
        assert_eq!(
            block.globally_reachable, expected,
            "{cidr}: CSV says {reach}"
        );
        assert_eq!(block.in_iana_special_registry, f[c_in] == "yes", "{cidr}");
        // Nothing the registry calls not reachable may come out public.
        if expected == Some(false) {
            let first = classify(cidr.network());
            assert!(
                !first.is_public() || first.block.as_ref().is_some_and(|b| b.cidr != cidr),
                "{cidr} is not globally reachable but {} is public",
                cidr.network()
            );
        }
    }
    assert!(
        in_csv.len() >= 50,
        "only {} rows read from {path}",
        in_csv.len()
    );
    // Blocks the table adds beyond the CSV are the reserved IPv6 space only.
    let extra: Vec<_> = SPECIAL_BLOCKS
        .iter()
        .filter(|b| !in_csv.contains(&b.cidr))
        .collect();
    assert_eq!(SPECIAL_BLOCKS.len(), in_csv.len() + extra.len());
    for b in extra {
        assert_eq!(
            b.rule,
            BlockRule::Class(Reserved),
            "{} is not in the CSV",
            b.cidr
        );
        assert!(!b.in_iana_special_registry);
    }
}

#[test]
fn unspecified_ipv4_is_its_own_class() {
    // 0.0.0.0 is both "this network" and "this host"; the /32 wins.
    assert_eq!(
        classify(IpAddr::V4(Ipv4Addr::UNSPECIFIED)).class,
        Unspecified
    );
}
