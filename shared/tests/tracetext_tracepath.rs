//! iputils `tracepath` text through the public parser.

use std::net::IpAddr;

use lineprobe_shared::{Error, ParsedTrace, TraceFormat, parse_trace_text};

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/tracepath/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn parse(name: &str) -> ParsedTrace {
    parse_trace_text(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

#[test]
fn names_pmtu_change_and_asymmetry() {
    let t = parse("names_pmtu.txt");
    assert_eq!(t.format, TraceFormat::Tracepath);
    assert_eq!(t.target.as_deref(), Some("www.example.org"));
    let ttls: Vec<u8> = t.hops.iter().map(|h| h.ttl).collect();
    // The [LOCALHOST] line is not a hop; repeated TTLs merge.
    assert_eq!(ttls, vec![1, 2, 3, 4, 5]);
    let one = &t.hops[0];
    assert_eq!(one.names, vec!["_gateway".to_owned()]);
    assert!(
        one.addrs.is_empty(),
        "tracepath without -n prints names only"
    );
    assert_eq!(one.rtt_ms, vec![0.581, 0.402]);
    assert_eq!((one.sent, one.received), (2, 2));
    let two = &t.hops[1];
    assert_eq!(
        two.names,
        vec!["_gateway".to_owned(), "bras.isp.example".to_owned()]
    );
    assert_eq!(
        two.annotations,
        vec!["pmtu 1492".to_owned(), "asymm 3".to_owned()]
    );
    let three = &t.hops[2];
    assert!(three.is_silent() && three.names.is_empty());
    assert_eq!((three.sent, three.received), (1, 0));
    assert_eq!(t.hops[4].annotations, vec!["reached".to_owned()]);
}

#[test]
fn numeric_ipv6_with_unreachable_mark() {
    let t = parse("ipv6_n.txt");
    assert_eq!(t.format, TraceFormat::Tracepath);
    assert_eq!(t.hops.len(), 2);
    assert_eq!(t.hops[0].addrs, vec![ip("2001:db8:1::1")]);
    assert_eq!(t.hops[0].rtt_ms.len(), 2);
    assert_eq!(t.hops[1].addrs, vec![ip("2001:db8:2::1")]);
    assert_eq!(t.hops[1].annotations, vec!["!H".to_owned()]);
}

#[test]
fn names_with_addresses() {
    let t = parse("both_b.txt");
    let list: Vec<(u8, Vec<IpAddr>)> = t.hops.iter().map(|h| (h.ttl, h.addrs.clone())).collect();
    assert_eq!(
        list,
        vec![
            (1, vec![ip("192.168.1.1")]),
            (2, vec![]),
            (3, vec![ip("203.0.113.9")]),
            (4, vec![]),
            (5, vec![ip("198.51.100.50")]),
        ]
    );
    assert_eq!(t.hops[0].names, vec!["router.lan".to_owned()]);
    assert!(t.hops[2].names.is_empty());
    assert_eq!(t.hops[2].annotations, vec!["asymm 4".to_owned()]);
    assert_eq!(t.hops[3].annotations, vec!["send failed".to_owned()]);
    assert_eq!(t.hops[4].annotations, vec!["reached".to_owned()]);
}

#[test]
fn translated_output() {
    let t = parse("localized_fr.txt");
    assert_eq!(t.format, TraceFormat::Tracepath);
    let list: Vec<(u8, Vec<IpAddr>)> = t.hops.iter().map(|h| (h.ttl, h.addrs.clone())).collect();
    assert_eq!(
        list,
        vec![
            (1, vec![ip("192.168.1.1")]),
            (2, vec![]),
            (3, vec![ip("198.51.100.7")])
        ]
    );
    assert_eq!(t.hops[0].rtt_ms, vec![0.512]);
    assert_eq!(t.hops[1].received, 0);
}

#[test]
fn hop_zero_is_malformed() {
    match parse_trace_text(&fixture("bad_ttl.txt")) {
        Err(Error::MalformedTrace { format, line, .. }) => {
            assert_eq!(format, TraceFormat::Tracepath);
            assert_eq!(line, 3);
        }
        other => panic!("expected a malformed-trace error, got {other:?}"),
    }
}
