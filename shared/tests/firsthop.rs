//! The first public hop, on hand-built hop lists.

use std::net::IpAddr;

use ipnet::IpNet;
use lineprobe_shared::{
    AddressClass, Classifier, ClassifierConfig, EmbeddingKind, Hop, HopKind, classify_hops,
    first_public_hop,
};

fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("bad test address {s}: {e}"))
}

/// A trace from one address list per TTL (starting at 1); `[]` is silence.
fn trace(hops: &[&[&str]]) -> Vec<Hop> {
    hops.iter()
        .zip(1u8..)
        .map(|(addrs, ttl)| {
            let mut hop = Hop::new(ttl);
            for a in *addrs {
                hop.push_addr(ip(a));
            }
            hop
        })
        .collect()
}

fn kinds(hops: &[lineprobe_shared::ClassifiedHop]) -> Vec<HopKind> {
    hops.iter().map(|h| h.kind).collect()
}

fn registry() -> Classifier {
    Classifier::default()
}

#[test]
fn home_router_then_cgnat_then_silence_then_public() {
    let hops = trace(&[
        &["192.168.1.1"],
        &["100.64.12.1"],
        &[],
        &["10.255.0.3"],
        &["202.97.33.1"],
        &["202.97.50.2"],
    ]);
    let a = first_public_hop(&registry(), &hops, Some(ip("93.184.216.34")));
    assert_eq!(a.first_public_addr(), Some((5, ip("202.97.33.1"))));
    let first = a.first_public.as_ref().unwrap();
    assert_eq!(first.classification.class, AddressClass::Public);
    assert_eq!(first.hop.kind, HopKind::Public);
    assert_eq!(
        kinds(&a.before),
        [
            HopKind::Private,
            HopKind::SharedCgnat,
            HopKind::NoReply,
            HopKind::Private
        ]
    );
    assert_eq!(
        a.before.iter().map(|h| h.ttl).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(a.before[1].addrs[0].class, AddressClass::Shared);
    assert!(a.cgnat_seen);
    assert!(!a.tunnel_seen);
    assert!(!a.ds_lite_seen);
    assert_eq!(a.silent_skipped, 1);
    assert_eq!(a.destination_ttl, None);
}

#[test]
fn a_line_without_cgnat_says_so() {
    let hops = trace(&[&["192.168.0.1"], &[], &[], &["61.152.24.1"]]);
    let a = registry().first_public_hop(&hops, None);
    assert_eq!(a.first_public_addr(), Some((4, ip("61.152.24.1"))));
    assert!(!a.cgnat_seen);
    assert_eq!(a.silent_skipped, 2);
}

#[test]
fn several_addresses_per_hop() {
    // Hop 2 load-balances between a CGNAT and a private address; hop 3
    // between a private and two public addresses: the first public one wins.
    let hops = trace(&[
        &["192.168.1.1"],
        &["10.0.0.1", "100.64.0.1"],
        &["172.16.5.5", "221.183.1.1", "221.183.1.2"],
        &["221.183.9.9"],
    ]);
    let a = first_public_hop(&registry(), &hops, None);
    assert_eq!(a.first_public_addr(), Some((3, ip("221.183.1.1"))));
    let first = a.first_public.as_ref().unwrap();
    assert_eq!(first.hop.addrs.len(), 3);
    assert_eq!(first.hop.addrs[0].class, AddressClass::Private);
    // CGNAT beats private when a hop shows both.
    assert_eq!(kinds(&a.before), [HopKind::Private, HopKind::SharedCgnat]);
    assert_eq!(a.before[1].addrs.len(), 2);
    assert!(a.cgnat_seen);
}

#[test]
fn ipv6_trace() {
    let hops = trace(&[
        &["fe80::1"],
        &["fd00:1::1"],
        &[],
        &["240e:1:2::1", "240e:1:2::2"],
    ]);
    let a = first_public_hop(&registry(), &hops, Some(ip("2400:3200::1")));
    assert_eq!(a.first_public_addr(), Some((4, ip("240e:1:2::1"))));
    assert_eq!(
        kinds(&a.before),
        [HopKind::OtherNonPublic, HopKind::Private, HopKind::NoReply]
    );
    assert_eq!(a.before[0].addrs[0].class, AddressClass::LinkLocal);
    assert_eq!(a.before[1].addrs[0].class, AddressClass::UniqueLocal);
}

#[test]
fn ipv6_through_nat64_and_a_6to4_tunnel() {
    // A NAT64 translator shows IPv4 routers inside 64:ff9b::/96.
    let hops = trace(&[
        &["64:ff9b::c0a8:101"],
        &["64:ff9b::6440:1"],
        &["64:ff9b::ca61:2101"],
    ]);
    let a = first_public_hop(&registry(), &hops, None);
    let first = a.first_public.as_ref().unwrap();
    assert_eq!(first.ttl, 3);
    assert_eq!(first.addr, ip("64:ff9b::ca61:2101"));
    assert_eq!(first.classification.effective_addr(), ip("202.97.33.1"));
    assert_eq!(kinds(&a.before), [HopKind::Private, HopKind::SharedCgnat]);
    assert!(a.cgnat_seen);
    assert!(!a.tunnel_seen);

    // A 6to4 hop: the embedded IPv4 address is public, and a tunnel is noted.
    let hops = trace(&[&["fd00::1"], &["2002:ca61:2101::1"]]);
    let a = first_public_hop(&registry(), &hops, None);
    let first = a.first_public.as_ref().unwrap();
    assert_eq!(first.ttl, 2);
    assert_eq!(
        first.classification.embedded.map(|e| e.kind),
        Some(EmbeddingKind::SixToFour)
    );
    assert!(a.tunnel_seen);
}

#[test]
fn a_tunnel_seen_before_the_first_public_hop_counts() {
    let hops = trace(&[&["2002:c0a8:101::1"], &["2400:3200::1"]]);
    let a = first_public_hop(&registry(), &hops, None);
    assert_eq!(a.first_public_addr(), Some((2, ip("2400:3200::1"))));
    assert!(a.tunnel_seen);
    assert_eq!(a.before[0].kind, HopKind::Private);
}

#[test]
fn only_private_hops_have_no_first_public_hop() {
    let hops = trace(&[&["192.168.1.1"], &["10.1.1.1"], &[], &["100.64.1.1"], &[]]);
    let a = first_public_hop(&registry(), &hops, None);
    assert!(a.first_public.is_none());
    assert_eq!(a.first_public_addr(), None);
    // Everything walked is on record.
    assert_eq!(a.before.len(), 5);
    assert_eq!(a.silent_skipped, 2);
    assert!(a.cgnat_seen);

    let empty = first_public_hop(&registry(), &[], None);
    assert!(empty.first_public.is_none() && empty.before.is_empty());
}

#[test]
fn the_destination_is_not_a_first_public_hop() {
    // The only public reply is the destination's: it names the receiver's
    // network, not the line's carrier.
    let target = ip("8.8.8.8");
    let hops = trace(&[&["192.168.1.1"], &[], &["8.8.8.8"]]);
    let a = first_public_hop(&registry(), &hops, Some(target));
    assert!(a.first_public.is_none());
    assert_eq!(a.destination_ttl, Some(3));
    assert_eq!(
        kinds(&a.before),
        [HopKind::Private, HopKind::NoReply, HopKind::Destination]
    );

    // Without a target the same reply is a public hop.
    let a = first_public_hop(&registry(), &hops, None);
    assert_eq!(a.first_public_addr(), Some((3, target)));

    // A tool that printed the destination IPv4-mapped is still recognised.
    let hops = trace(&[&["192.168.1.1"], &["::ffff:8.8.8.8"]]);
    assert!(
        first_public_hop(&registry(), &hops, Some(target))
            .first_public
            .is_none()
    );

    // A public router before the destination is found; a hop that answered
    // from both the destination and a router gives the router.
    let hops = trace(&[&["10.0.0.1"], &["8.8.8.8", "72.14.233.1"]]);
    let a = first_public_hop(&registry(), &hops, Some(target));
    assert_eq!(a.first_public_addr(), Some((2, ip("72.14.233.1"))));
}

#[test]
fn the_walk_stops_at_the_destination() {
    // Nothing after the destination's reply is a hop of the access path.
    let hops = trace(&[&["10.0.0.1"], &["1.1.1.1"], &["9.9.9.9"]]);
    let a = first_public_hop(&registry(), &hops, Some(ip("1.1.1.1")));
    assert!(a.first_public.is_none());
    assert_eq!(a.before.len(), 2);
    assert_eq!(a.destination_ttl, Some(2));
}

#[test]
fn documentation_ranges_are_not_public_by_default() {
    let hops = trace(&[
        &["192.168.1.1"],
        &["198.51.100.1"],
        &["203.0.113.9"],
        &["2001:db8::1"],
    ]);
    let a = first_public_hop(&registry(), &hops, None);
    assert!(a.first_public.is_none());
    assert_eq!(
        kinds(&a.before),
        [
            HopKind::Private,
            HopKind::OtherNonPublic,
            HopKind::OtherNonPublic,
            HopKind::OtherNonPublic
        ]
    );
}

#[test]
fn a_lab_config_makes_its_documentation_range_public() {
    let lab = Classifier::new(&ClassifierConfig {
        extra_public: vec!["203.0.113.0/24".parse::<IpNet>().unwrap()],
    })
    .unwrap();
    let hops = trace(&[
        &["192.168.1.1"],
        &["198.51.100.1"],
        &["203.0.113.9"],
        &["203.0.113.20"],
    ]);
    let a = first_public_hop(&lab, &hops, Some(ip("203.0.113.20")));
    assert_eq!(a.first_public_addr(), Some((3, ip("203.0.113.9"))));
    let first = a.first_public.as_ref().unwrap();
    assert_eq!(
        first.classification.public_override,
        Some("203.0.113.0/24".parse().unwrap())
    );
    // 198.51.100.0/24 was not configured and stays non-public.
    assert_eq!(a.before[1].kind, HopKind::OtherNonPublic);
}

#[test]
fn ds_lite_and_other_non_public_hops_are_skipped_and_noted() {
    let hops = trace(&[
        &["192.0.0.2"],
        &["169.254.3.3"],
        &["198.18.0.1"],
        &["192.0.0.8"],
        &["36.110.1.1"],
    ]);
    let a = first_public_hop(&registry(), &hops, None);
    assert_eq!(a.first_public_addr(), Some((5, ip("36.110.1.1"))));
    assert!(a.ds_lite_seen);
    assert!(!a.cgnat_seen);
    assert!(a.before.iter().all(|h| h.kind == HopKind::OtherNonPublic));
}

#[test]
fn hops_are_walked_in_ttl_order() {
    let mut hops = trace(&[&["192.168.1.1"], &["100.64.0.1"], &["202.97.33.1"]]);
    hops.reverse();
    let a = first_public_hop(&registry(), &hops, None);
    assert_eq!(a.first_public_addr(), Some((3, ip("202.97.33.1"))));
    assert_eq!(a.before.len(), 2);
}

#[test]
fn classify_hops_covers_every_hop() {
    let target = ip("93.184.216.34");
    let hops = trace(&[
        &["192.168.1.1"],
        &["100.64.0.1"],
        &[],
        &["202.97.33.1"],
        &["93.184.216.34"],
    ]);
    let all = classify_hops(&registry(), &hops, Some(target));
    assert_eq!(
        kinds(&all),
        [
            HopKind::Private,
            HopKind::SharedCgnat,
            HopKind::NoReply,
            HopKind::Public,
            HopKind::Destination
        ]
    );
    assert!(all[2].addrs.is_empty());
    assert_eq!(all, registry().classify_hops(&hops, Some(target)));
}

#[test]
fn the_analysis_serializes_for_the_cli() {
    let hops = trace(&[&["192.168.1.1"], &["100.64.0.1"], &[], &["202.97.33.1"]]);
    let a = first_public_hop(&registry(), &hops, None);
    let json = serde_json::to_value(&a).unwrap();
    assert_eq!(json["first_public"]["ttl"], 4);
    assert_eq!(json["first_public"]["addr"], "202.97.33.1");
    assert_eq!(json["before"][1]["kind"], "shared-cgnat");
    assert_eq!(json["before"][2]["kind"], "no-reply");
    assert_eq!(json["before"][1]["addrs"][0]["class"], "shared");
    assert_eq!(json["cgnat_seen"], true);
    assert_eq!(json["silent_skipped"], 1);
    let back: lineprobe_shared::FirstHopAnalysis = serde_json::from_value(json).unwrap();
    assert_eq!(back, a);
    for kind in [
        HopKind::NoReply,
        HopKind::SharedCgnat,
        HopKind::OtherNonPublic,
    ] {
        assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
    }
}
