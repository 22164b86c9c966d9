//! NAT64 network-specific prefixes: the RFC 6052 layouts, and the local-use
//! prefix `64:ff9b:1::/48` (RFC 8215), unwrapped only inside a prefix the
//! classifier was given with its length.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv6Net};
use lineprobe_shared::{
    AddressClass, Classifier, ClassifierConfig, EmbeddingKind, Error, classify, nat64_embed,
    nat64_extract,
};

fn v6(s: &str) -> Ipv6Addr {
    s.parse()
        .unwrap_or_else(|e| panic!("bad test address {s}: {e}"))
}

fn prefix(s: &str) -> Ipv6Net {
    s.parse()
        .unwrap_or_else(|e| panic!("bad test prefix {s}: {e}"))
}

const V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 33);

/// RFC 6052 section 2.4, the table of examples: 192.0.2.33 under each
/// network-specific prefix length.
const RFC6052_TABLE: &[(&str, &str)] = &[
    ("2001:db8::/32", "2001:db8:c000:221::"),
    ("2001:db8:100::/40", "2001:db8:1c0:2:21::"),
    ("2001:db8:122::/48", "2001:db8:122:c000:2:2100::"),
    ("2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"),
    ("2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100:0"),
    ("2001:db8:122:344::/96", "2001:db8:122:344::192.0.2.33"),
    ("64:ff9b::/96", "64:ff9b::192.0.2.33"),
];

#[test]
fn the_layouts_are_rfc_6052s_own_examples() {
    for &(p, embedded) in RFC6052_TABLE {
        let p = prefix(p);
        assert_eq!(nat64_embed(p, V4), Some(v6(embedded)), "{p}");
        assert_eq!(nat64_extract(p.prefix_len(), v6(embedded)), Some(V4), "{p}");
    }
}

#[test]
fn every_bit_of_the_ipv4_address_goes_and_comes_back() {
    for len in [32, 40, 48, 56, 64, 96] {
        let p = Ipv6Net::new(v6("2001:db8:122:344::"), len).unwrap().trunc();
        for v4 in [
            Ipv4Addr::BROADCAST,
            Ipv4Addr::new(128, 0, 0, 1),
            Ipv4Addr::new(1, 2, 3, 4),
            Ipv4Addr::UNSPECIFIED,
        ] {
            let addr = nat64_embed(p, v4).unwrap();
            assert!(p.contains(&addr), "{p} {v4} {addr}");
            // The u-octet stays zero below /96.
            if len < 96 {
                assert_eq!(addr.octets()[8], 0, "{p} {v4} {addr}");
            }
            assert_eq!(nat64_extract(len, addr), Some(v4), "{p} {v4}");
        }
    }
}

#[test]
fn other_lengths_and_a_set_u_octet_carry_nothing() {
    assert_eq!(nat64_extract(72, v6("2001:db8::1")), None);
    assert_eq!(nat64_embed(prefix("2001:db8::/72"), V4), None);
    // 2001:db8:122:c000:2:2100:: with bits 64-71 set is not a translator's.
    assert_eq!(nat64_extract(48, v6("2001:db8:122:c000:ff02:2100::")), None);
}

fn with(prefixes: &[&str], extra_public: &[&str]) -> Result<Classifier, Error> {
    Classifier::with_nat64_prefixes(
        &ClassifierConfig {
            extra_public: extra_public
                .iter()
                .map(|s| s.parse::<IpNet>().unwrap())
                .collect(),
        },
        &prefixes.iter().map(|s| prefix(s)).collect::<Vec<_>>(),
    )
}

/// The local-use prefix is not unwrapped as if it were a /96: an operator's
/// /48 puts 8.8.4.4 at `64:ff9b:1:808:4:400::`, whose last 32 bits read
/// 4.0.0.0, and an operator's /64 `64:ff9b:1:abcd::` puts 192.0.2.33 at
/// `64:ff9b:1:abcd:c0:2:2100:0`, whose last 32 bits read 33.0.0.0.
#[test]
fn the_local_use_prefix_unwraps_only_by_a_configured_layout() {
    for addr in [
        "64:ff9b:1:808:4:400::",
        "64:ff9b:1:abcd:c0:2:2100:0",
        "64:ff9b:1:abcd::c000:221",
    ] {
        let c = classify(IpAddr::V6(v6(addr)));
        assert_eq!(c.embedded, None, "{addr}");
        assert_eq!(c.class, AddressClass::Translation, "{addr}");
        assert!(!c.is_public(), "{addr}");
        assert_eq!(c.effective_addr(), IpAddr::V6(v6(addr)), "{addr}");
    }

    let classifier = with(&["64:ff9b:1::/48", "64:ff9b:2::/48"], &[]);
    assert!(classifier.is_err(), "64:ff9b:2::/48 is outside the block");
    for (prefixes, addr, v4) in [
        (&["64:ff9b:1::/48"][..], "64:ff9b:1:808:4:400::", "8.8.4.4"),
        (
            &["64:ff9b:1:ab00::/56"],
            "64:ff9b:1:ab08:8:404::",
            "8.8.4.4",
        ),
        (
            &["64:ff9b:1:abcd::/64", "64:ff9b:1:1234::/96"],
            "64:ff9b:1:abcd:c0:2:2100:0",
            "192.0.2.33",
        ),
        (
            &["64:ff9b:1:abcd::/64", "64:ff9b:1:1234::/96"],
            "64:ff9b:1:1234::8.8.4.4",
            "8.8.4.4",
        ),
        (
            &["64:ff9b:1:abcd::/96"],
            "64:ff9b:1:abcd::c000:221",
            "192.0.2.33",
        ),
    ] {
        let classifier = with(prefixes, &[]).unwrap_or_else(|e| panic!("{prefixes:?}: {e}"));
        let c = classifier.classify(IpAddr::V6(v6(addr)));
        let e = c
            .embedded
            .unwrap_or_else(|| panic!("{addr} not unwrapped under {prefixes:?}"));
        assert_eq!(e.kind, EmbeddingKind::Nat64LocalUse, "{addr}");
        assert_eq!(e.ipv4.to_string(), v4, "{addr}");
        assert_eq!(c.effective_addr(), IpAddr::V4(e.ipv4), "{addr}");
        assert_eq!(c.class, classify(IpAddr::V4(e.ipv4)).class, "{addr}");
        assert!(!c.tunnel, "{addr}");
    }

    // Outside the configured prefix, the rest of the block is not unwrapped.
    let classifier = with(&["64:ff9b:1:abcd::/96"], &[]).unwrap();
    let c = classifier.classify(IpAddr::V6(v6("64:ff9b:1:abce::c000:221")));
    assert_eq!((c.embedded, c.class), (None, AddressClass::Translation));
    // The well-known prefix is unaffected.
    let c = classifier.classify(IpAddr::V6(v6("64:ff9b::808:808")));
    assert_eq!(c.embedded.map(|e| e.kind), Some(EmbeddingKind::Nat64));
}

#[test]
fn bad_prefixes_are_refused_with_the_reason() {
    for (prefixes, key, words) in [
        (&["64:ff9b:1::/72"][..], "nat64_prefixes[0]", "RFC 6052"),
        (&["2001:db8:122::/48"], "nat64_prefixes[0]", "local-use"),
        (&["64:ff9b::/96"], "nat64_prefixes[0]", "local-use"),
        (&["64:ff9b:1:abcd::1/96"], "nat64_prefixes[0]", "host bits"),
        (
            &["64:ff9b:1:ab00::/56", "64:ff9b:1:abcd::/64"],
            "nat64_prefixes[1]",
            "overlaps",
        ),
    ] {
        let Err(Error::Config { key: got, reason }) = with(prefixes, &[]) else {
            panic!("{prefixes:?} accepted");
        };
        assert_eq!(got, key, "{prefixes:?}");
        assert!(reason.contains(words), "{prefixes:?}: {reason}");
    }
}

/// An extra-public CIDR over a configured prefix is judged by what that
/// prefix's layout puts there, as for the well-known prefix.
#[test]
fn extra_public_is_judged_by_the_configured_layout() {
    for (nsp, cidr, words) in [
        ("64:ff9b:1:abcd::/96", "64:ff9b:1::/48", "loopback"),
        (
            "64:ff9b:1:abcd::/96",
            "64:ff9b:1:abcd::6440:0/106",
            "carrier-grade NAT",
        ),
        // /64: 127.0.0.0/8 is the first octet, right after the prefix.
        ("64:ff9b:1:abcd::/64", "64:ff9b:1:abcd:7f::/72", "loopback"),
        // /48: 100.64.0.0/10 is bits 48-57.
        ("64:ff9b:1::/48", "64:ff9b:1:6440::/58", "carrier-grade NAT"),
    ] {
        let Err(Error::Config { key, reason }) = with(&[nsp], &["203.0.113.0/24", cidr]) else {
            panic!("{cidr} accepted under {nsp}");
        };
        assert_eq!(key, "extra_public[1]", "{cidr}");
        assert!(reason.contains(words), "{cidr} under {nsp}: {reason}");
    }
    // The lab's own range through the layout is fine, and public.
    let classifier = with(&["64:ff9b:1::/48"], &["64:ff9b:1:cb00:71::/64"]).unwrap();
    let lab = nat64_embed(prefix("64:ff9b:1::/48"), Ipv4Addr::new(203, 0, 113, 9)).unwrap();
    assert_eq!(lab, v6("64:ff9b:1:cb00:71:900::"));
    assert!(classifier.classify(IpAddr::V6(lab)).is_public());
    let loopback = nat64_embed(prefix("64:ff9b:1::/48"), Ipv4Addr::LOCALHOST).unwrap();
    assert!(!classifier.classify(IpAddr::V6(loopback)).is_public());
}
