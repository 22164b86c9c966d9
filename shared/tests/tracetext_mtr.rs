//! `mtr --report` and `mtr --json` text through the public parser.

use std::net::IpAddr;

use lineprobe_shared::{Error, ParsedTrace, TraceFormat, parse_trace_text};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/mtr/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn parse(name: &str) -> ParsedTrace {
    parse_trace_text(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

#[test]
fn report_with_names_silent_hop_and_multipath() {
    let t = parse("report_names_multipath.txt");
    assert_eq!(t.format, TraceFormat::MtrReport);
    assert_eq!(t.target.as_deref(), Some("www.example.com"));
    let ttls: Vec<u8> = t.hops.iter().map(|h| h.ttl).collect();
    assert_eq!(ttls, vec![1, 2, 3, 4, 5]);
    let gw = &t.hops[0];
    assert!(gw.addrs.is_empty());
    assert_eq!(gw.names, vec!["_gateway".to_owned()]);
    assert_eq!((gw.sent, gw.received), (10, 10));
    assert_eq!(gw.rtt_ms, vec![0.6]);
    let silent = &t.hops[1];
    assert!(silent.is_silent());
    assert_eq!((silent.sent, silent.received), (10, 0));
    assert!(silent.rtt_ms.is_empty());
    assert_eq!((t.hops[2].sent, t.hops[2].received), (10, 8));
    assert_eq!(
        t.hops[3].addrs,
        vec![
            ip("198.51.100.17"),
            ip("198.51.100.21"),
            ip("198.51.100.25")
        ]
    );
    assert_eq!(t.hops[4].addrs, vec![ip("203.0.113.44")]);
}

#[test]
fn wide_report_with_as_column() {
    let t = parse("report_wide_asn.txt");
    assert_eq!(t.format, TraceFormat::MtrReport);
    assert_eq!(t.hops.len(), 4);
    assert_eq!(t.hops[0].addrs, vec![ip("192.168.1.1")]);
    assert!(t.hops[0].annotations.is_empty(), "AS??? says nothing");
    assert!(t.hops[1].is_silent());
    assert_eq!(t.hops[2].addrs, vec![ip("198.51.100.3")]);
    assert_eq!(t.hops[2].names, vec!["bras.example.cn".to_owned()]);
    assert_eq!(t.hops[2].annotations, vec!["AS4134".to_owned()]);
    assert!(t.hops[3].is_silent());
    assert_eq!(
        t.hops[3].annotations,
        vec!["AS4134".to_owned(), "no route to host".to_owned()]
    );
}

#[test]
fn report_columns_follow_the_header() {
    let t = parse("report_ipv6_fields.txt");
    let counts: Vec<(u16, u16)> = t.hops.iter().map(|h| (h.sent, h.received)).collect();
    assert_eq!(counts, vec![(6, 6), (6, 4), (6, 0)]);
    assert_eq!(t.hops[1].addrs, vec![ip("2001:db8:2::1")]);
    assert_eq!(t.hops[1].rtt_ms, vec![5.3]);
}

#[test]
fn report_line_with_a_missing_column_is_malformed() {
    let text = "HOST: box  Loss%   Snt   Last   Avg  Best  Wrst StDev\n  \
                1.|-- 192.0.2.1  0.0%  10  0.4  0.5\n";
    match parse_trace_text(text) {
        Err(Error::MalformedTrace {
            format,
            line,
            reason,
        }) => {
            assert_eq!(format, TraceFormat::MtrReport);
            assert_eq!(line, 2);
            assert!(reason.contains("columns"), "{reason}");
        }
        other => panic!("expected a malformed-trace error, got {other:?}"),
    }
}

#[test]
fn json_current_version() {
    let t = parse("json_new.json");
    assert_eq!(t.format, TraceFormat::MtrJson);
    assert_eq!(t.target_addr, Some(ip("203.0.113.44")));
    let list: Vec<(u8, Vec<IpAddr>)> = t.hops.iter().map(|h| (h.ttl, h.addrs.clone())).collect();
    assert_eq!(
        list,
        vec![
            (1, vec![ip("192.168.1.1")]),
            (2, vec![]),
            (3, vec![ip("203.0.113.44")]),
        ]
    );
    assert_eq!(t.hops[0].names, vec!["_gateway".to_owned()]);
    assert_eq!(t.hops[0].rtt_ms, vec![0.603]);
    assert_eq!((t.hops[1].sent, t.hops[1].received), (10, 0));
    assert_eq!((t.hops[2].sent, t.hops[2].received), (10, 7));
    assert_eq!(t.hops[2].annotations, vec!["AS64500".to_owned()]);
}

#[test]
fn json_older_version_with_strings_and_prompt() {
    let t = parse("json_old_strings.json");
    assert_eq!(t.format, TraceFormat::MtrJson);
    assert_eq!(t.target.as_deref(), Some("198.51.100.99"));
    let counts: Vec<(u8, u16, u16)> = t.hops.iter().map(|h| (h.ttl, h.sent, h.received)).collect();
    assert_eq!(counts, vec![(1, 4, 4), (2, 4, 3)]);
}

#[test]
fn json_hop_zero_is_malformed() {
    assert!(matches!(
        parse_trace_text(&fixture("json_bad_count.json")),
        Err(Error::MalformedTrace {
            format: TraceFormat::MtrJson,
            ..
        })
    ));
}

#[test]
fn broken_json_is_malformed() {
    let text = "{\"report\": {\"mtr\": {}, \"hubs\": [{\"count\": 1, \"host\": ";
    assert!(matches!(
        parse_trace_text(text),
        Err(Error::MalformedTrace {
            format: TraceFormat::MtrJson,
            ..
        })
    ));
}

#[test]
fn pasted_interactive_screen() {
    let t = parse("interactive_screen.txt");
    assert_eq!(t.format, TraceFormat::MtrReport);
    let ttls: Vec<u8> = t.hops.iter().map(|h| h.ttl).collect();
    assert_eq!(ttls, vec![1, 2, 3, 4]);
    assert_eq!(t.hops[0].names, vec!["_gateway".to_owned()]);
    assert_eq!((t.hops[0].sent, t.hops[0].received), (30, 30));
    assert!(t.hops[1].is_silent());
    assert_eq!(t.hops[2].addrs, vec![ip("100.64.3.1"), ip("100.64.3.5")]);
    assert_eq!((t.hops[2].sent, t.hops[2].received), (30, 29));
    assert!(t.hops[3].is_silent());
    assert_eq!(t.hops[3].annotations, vec!["waiting for reply".to_owned()]);
}

#[test]
fn flat_json_hop_list() {
    let t = parse("json_flat_hops.json");
    assert_eq!(t.format, TraceFormat::MtrJson);
    assert_eq!(t.target_addr, Some(ip("192.0.2.53")));
    let list: Vec<(u8, Vec<IpAddr>, u16, u16)> = t
        .hops
        .iter()
        .map(|h| (h.ttl, h.addrs.clone(), h.sent, h.received))
        .collect();
    assert_eq!(
        list,
        vec![
            (1, vec![ip("203.0.113.1")], 5, 5),
            (2, vec![], 5, 0),
            (3, vec![ip("192.0.2.53")], 5, 4),
        ]
    );
    assert!(t.hops[0].names.is_empty(), "`unresolved` is not a name");
    assert_eq!(t.hops[2].names, vec!["ns.example.org".to_owned()]);
    assert_eq!(t.hops[2].annotations, vec!["AS64501".to_owned()]);
}
