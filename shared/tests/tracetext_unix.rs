//! `traceroute` text (Linux, BSD, macOS, `BusyBox`) through the public parser.

use std::net::IpAddr;

use lineprobe_shared::{
    Error, Hop, ParsedTrace, TraceFormat, parse_trace_bytes, parse_trace_text, parse_trace_text_as,
};

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/traceroute/{name}",
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

fn addrs(hop: &Hop) -> Vec<String> {
    hop.addrs.iter().map(ToString::to_string).collect()
}

fn hop_list(trace: &ParsedTrace) -> Vec<(u8, Vec<String>)> {
    trace.hops.iter().map(|h| (h.ttl, addrs(h))).collect()
}

fn owned(list: &[(u8, &[&str])]) -> Vec<(u8, Vec<String>)> {
    list.iter()
        .map(|(t, a)| (*t, a.iter().map(|s| (*s).to_owned()).collect()))
        .collect()
}

#[test]
fn linux_names_with_as_lookups_and_prompt() {
    let t = parse("linux_names_asn.txt");
    assert_eq!(t.format, TraceFormat::Traceroute);
    assert_eq!(t.target.as_deref(), Some("www.example.net"));
    assert_eq!(t.target_addr, Some(ip("203.0.113.80")));
    assert_eq!(t.max_hops, Some(30));
    assert_eq!(
        hop_list(&t),
        owned(&[
            (1, &["192.168.31.1"]),
            (2, &["100.64.0.1"]),
            (3, &[]),
            (4, &["198.51.100.13", "198.51.100.9"]),
            (5, &["198.51.100.66"]),
            (6, &["203.0.113.80"]),
        ])
    );
    let first = &t.hops[0];
    assert_eq!(first.names, vec!["_gateway".to_owned()]);
    assert_eq!(first.rtt_ms, vec![0.612, 0.577, 0.561]);
    assert_eq!((first.sent, first.received), (3, 3));
    // `[*]` says no AS is known: nothing recorded.
    assert!(first.annotations.is_empty());
    let silent = &t.hops[2];
    assert!(silent.is_silent());
    assert_eq!((silent.sent, silent.received), (3, 0));
    assert!(silent.rtt_ms.is_empty());
    let balanced = &t.hops[3];
    assert_eq!(balanced.names, vec!["bras-1.city.example.cn".to_owned()]);
    assert_eq!(balanced.annotations, vec!["AS4134".to_owned()]);
    assert_eq!(balanced.rtt_ms, vec![6.104, 6.093, 7.250]);
    let lossy = &t.hops[4];
    assert_eq!((lossy.sent, lossy.received), (3, 2));
    assert_eq!(t.hops[5].annotations, vec!["AS64500".to_owned()]);
}

#[test]
fn linux_numeric_marks_are_kept_verbatim() {
    let t = parse("linux_n_bang.txt");
    assert_eq!(t.format, TraceFormat::Traceroute);
    assert_eq!(t.target_addr, Some(ip("192.0.2.200")));
    assert_eq!(t.hops.len(), 5);
    assert!(t.hops.iter().all(|h| h.addrs.len() == 1));
    assert_eq!(t.hops[1].annotations, vec!["F=1480".to_owned()]);
    assert_eq!(t.hops[2].annotations, vec!["!F-1480".to_owned()]);
    assert_eq!((t.hops[2].sent, t.hops[2].received), (3, 2));
    // `5.001ms` without the space is a time too.
    assert_eq!(t.hops[3].rtt_ms, vec![5.001, 5.120, 5.044]);
    assert_eq!(t.hops[3].annotations, vec!["!X".to_owned()]);
    assert_eq!(
        t.hops[4].annotations,
        vec!["!<10>".to_owned(), "!A".to_owned()]
    );
    assert_eq!(addrs(&t.hops[4]), vec!["192.0.2.200".to_owned()]);
}

#[test]
fn linux_icmp_ipv6_with_zone_and_load_balancing() {
    let t = parse("linux_icmp_ipv6.txt");
    assert_eq!(t.format, TraceFormat::Traceroute);
    assert_eq!(t.target_addr, Some(ip("2001:db8:ff::53")));
    assert_eq!(
        hop_list(&t),
        owned(&[
            (1, &["fe80::1"]),
            (2, &["2001:db8:10::1"]),
            (3, &[]),
            (4, &["2001:db8:20::5", "2001:db8:20::9"]),
            (5, &["2001:db8:ff::53"]),
        ])
    );
    assert_eq!(t.hops[3].rtt_ms.len(), 3);
}

#[test]
fn macos_continuation_lines_belong_to_the_hop_above() {
    let t = parse("macos_continuation.txt");
    assert_eq!(t.format, TraceFormat::Traceroute);
    assert_eq!(t.target.as_deref(), Some("media.example.org"));
    assert_eq!(t.max_hops, Some(64));
    assert_eq!(
        hop_list(&t),
        owned(&[
            (1, &["192.168.0.1"]),
            (2, &[]),
            (3, &["203.0.113.33", "203.0.113.37"]),
            (4, &["198.51.100.2", "198.51.100.6"]),
            (5, &["198.51.100.140"]),
        ])
    );
    let three = &t.hops[2];
    assert_eq!((three.sent, three.received), (3, 3));
    assert_eq!(three.annotations, vec!["AS64510".to_owned()]);
    let four = &t.hops[3];
    assert_eq!((four.sent, four.received), (3, 2));
    assert_eq!(
        four.names,
        vec![
            "edge-a.transit.example".to_owned(),
            "edge-b.transit.example".to_owned()
        ]
    );
    assert_eq!(t.hops[0].annotations, vec!["AS0".to_owned()]);
    assert_eq!(
        t.hops[4].annotations,
        vec!["AS64520".to_owned(), "!Z".to_owned()]
    );
}

#[test]
fn freebsd_traceroute6_header_with_source() {
    let t = parse("freebsd_traceroute6.txt");
    assert_eq!(t.format, TraceFormat::Traceroute);
    assert_eq!(t.target.as_deref(), Some("mirror.example.org"));
    assert_eq!(t.target_addr, Some(ip("2001:db8:500::10")));
    assert_eq!(
        hop_list(&t),
        owned(&[
            (1, &["2001:db8:1:2::1"]),
            (2, &["2001:db8:300::1", "2001:db8:300::5"]),
            (3, &[]),
            (4, &["2001:db8:500::10"]),
        ])
    );
    assert_eq!(t.hops[3].annotations, vec!["!P".to_owned()]);
}

#[test]
fn lbl_style_timeout_before_reply() {
    let t = parse("openbsd_lbl.txt");
    assert_eq!(t.format, TraceFormat::Traceroute);
    assert_eq!(addrs(&t.hops[1]), vec!["10.20.0.1".to_owned()]);
    assert_eq!((t.hops[1].sent, t.hops[1].received), (3, 2));
    assert_eq!(t.hops[2].annotations, vec!["!N".to_owned()]);
    assert_eq!(t.hops[3].names, vec!["ftp.example.com".to_owned()]);
}

#[test]
fn busybox_is_told_by_its_double_spaced_timeouts() {
    let t = parse("busybox_router.txt");
    assert_eq!(t.format, TraceFormat::BusyboxTraceroute);
    assert_eq!(t.target.as_deref(), Some("example.cn"));
    assert_eq!(
        hop_list(&t),
        owned(&[
            (1, &["192.168.50.1"]),
            (2, &[]),
            (3, &["100.72.0.1"]),
            (4, &["198.51.100.25", "198.51.100.29"]),
            (5, &["203.0.113.5"]),
        ])
    );
    // `name (addr)` where the name is the address again: no name recorded.
    assert!(t.hops[0].names.is_empty());
    assert_eq!((t.hops[4].sent, t.hops[4].received), (3, 2));
}

#[test]
fn busybox_ipv6_and_probe_size_heuristic() {
    let t = parse("busybox_n_ipv6.txt");
    assert_eq!(t.format, TraceFormat::BusyboxTraceroute);
    assert_eq!(t.hops[1].annotations, vec!["!H".to_owned()]);
    let t = parse("busybox_no_timeouts.txt");
    assert_eq!(t.format, TraceFormat::BusyboxTraceroute);
    assert_eq!(hop_list(&t).len(), 2);
}

#[test]
fn tcptraceroute_header_and_open_port() {
    let t = parse("tcptraceroute_open.txt");
    assert_eq!(t.format, TraceFormat::Traceroute);
    assert_eq!(t.target.as_deref(), Some("shop.example.com"));
    assert_eq!(t.target_addr, Some(ip("198.51.100.80")));
    assert_eq!(t.max_hops, Some(30));
    assert_eq!(t.hops.len(), 4);
    assert_eq!(addrs(&t.hops[3]), vec!["198.51.100.80".to_owned()]);
    assert_eq!(t.hops[3].annotations, vec!["open".to_owned()]);
}

#[test]
fn cisco_ios_output_reads_like_lbl() {
    let t = parse("cisco_ios.txt");
    assert_eq!(
        t.format,
        TraceFormat::Traceroute,
        "padded timeouts are not BusyBox here"
    );
    assert_eq!(t.target_addr, Some(ip("192.0.2.99")));
    assert_eq!(
        hop_list(&t),
        owned(&[
            (1, &["10.0.0.1"]),
            (2, &["10.0.1.1", "10.0.1.5"]),
            (3, &[]),
            (4, &["192.0.2.99"]),
        ])
    );
    assert_eq!(t.hops[0].rtt_ms, vec![4.0, 0.0, 0.0]);
    assert_eq!(
        t.hops[1].annotations,
        vec!["MPLS: Label 24 Exp 0".to_owned()]
    );
    assert_eq!((t.hops[3].sent, t.hops[3].received), (3, 2));
}

#[test]
fn a_ttl_zero_line_is_not_a_hop() {
    let text = "traceroute to 192.0.2.1 (192.0.2.1)...\n 0 -  *  *  *\n 1 192.0.2.1  9.87ms\n";
    let t = parse_trace_text(text).expect("parses");
    assert_eq!(hop_list(&t), owned(&[(1, &["192.0.2.1"])]));
}

#[test]
fn numbered_lines_before_the_header_are_not_hops() {
    let text = "$ ping -c1 192.0.2.1; traceroute 192.0.2.1\n\
                64 bytes from 192.0.2.1: icmp_seq=1 ttl=62 time=1.23 ms\n\
                traceroute to 192.0.2.1 (192.0.2.1), 30 hops max, 60 byte packets\n \
                1  10.0.0.1  0,512 ms  0,480 ms  0,470 ms\n \
                2  192.0.2.1  1,201 ms  1,187 ms  1,166 ms\n";
    let t = parse_trace_text(text).expect("parses");
    assert_eq!(
        hop_list(&t),
        owned(&[(1, &["10.0.0.1"]), (2, &["192.0.2.1"])])
    );
    assert_eq!(t.hops[0].rtt_ms, vec![0.512, 0.480, 0.470]);
}

#[test]
fn output_without_header() {
    let t = parse("no_header.txt");
    assert_eq!(t.format, TraceFormat::Traceroute);
    assert_eq!(t.target, None);
    assert_eq!(
        hop_list(&t),
        owned(&[(1, &["192.168.1.1"]), (2, &[]), (3, &["198.51.100.1"])])
    );
}

#[test]
fn crlf_and_bytes_parse_the_same() {
    let text = fixture("openbsd_lbl.txt");
    let crlf = text.replace('\n', "\r\n");
    let a = parse_trace_text(&text).expect("lf");
    let b = parse_trace_bytes(crlf.as_bytes()).expect("crlf");
    assert_eq!(a, b);
}

#[test]
fn interrupted_hop_line() {
    let text = "traceroute to 192.0.2.1 (192.0.2.1), 30 hops max, 60 byte packets\n \
                1  10.0.0.1  0.5 ms  0.4 ms  0.4 ms\n 2  * *^C\n";
    let t = parse_trace_text(text).expect("parses");
    assert_eq!(t.hops.len(), 2);
    assert_eq!((t.hops[1].sent, t.hops[1].received), (2, 0));
}

#[test]
fn hop_number_out_of_range_is_malformed() {
    match parse_trace_text(&fixture("bad_ttl.txt")) {
        Err(Error::MalformedTrace {
            format,
            line,
            reason,
        }) => {
            assert_eq!(format, TraceFormat::Traceroute);
            assert_eq!(line, 3);
            assert!(reason.contains("300"), "{reason}");
        }
        other => panic!("expected a malformed-trace error, got {other:?}"),
    }
}

#[test]
fn unclosed_parenthesis_is_malformed() {
    match parse_trace_text(&fixture("bad_token.txt")) {
        Err(Error::MalformedTrace { line, reason, .. }) => {
            assert_eq!(line, 3);
            assert!(reason.contains("never closed"), "{reason}");
        }
        other => panic!("expected a malformed-trace error, got {other:?}"),
    }
}

#[test]
fn windows_tracert_is_not_taken_for_traceroute() {
    let text = "\r\nTracing route to host.example [192.0.2.5]\r\nover a maximum of 30 hops:\r\n\r\n  \
                1    <1 ms    <1 ms    <1 ms  192.168.1.1\r\n  \
                2     5 ms     4 ms     5 ms  198.51.100.1\r\n  \
                3     *        *        *     Request timed out.\r\n\r\nTrace complete.\r\n";
    let format = parse_trace_text(text).ok().map(|t| t.format);
    assert!(
        format.is_none() || format == Some(TraceFormat::WindowsTracert),
        "claimed as {format:?}"
    );
    // Even without the header lines.
    let body = "  1    <1 ms    <1 ms    <1 ms  192.168.1.1\n  2     5 ms     4 ms     5 ms  198.51.100.1\n";
    let format = parse_trace_text(body).ok().map(|t| t.format);
    assert!(
        format.is_none() || format == Some(TraceFormat::WindowsTracert),
        "claimed as {format:?}"
    );
}

#[test]
fn unrelated_text_is_unrecognized() {
    for text in [
        "",
        "hello world\n",
        "PING 192.0.2.1 (192.0.2.1) 56(84) bytes of data.\n",
    ] {
        assert!(
            matches!(parse_trace_text(text), Err(Error::UnrecognizedTrace { .. })),
            "{text:?}"
        );
    }
}

#[test]
fn headerless_bsd_text_with_three_lost_probes_before_a_reply_is_not_tracert() {
    // BSD and macOS print the header to stderr, so the system engine reads
    // these lines alone; with four probes a hop, `* * *` and then an address
    // looked like tracert's columns.
    let text = " 1  192.0.2.1  1.1 ms  0.9 ms  0.8 ms  0.7 ms\n 2  * * * 198.51.100.1  12.345 ms\n";
    let t = parse_trace_text(text).expect("parses");
    assert_eq!(t.format, TraceFormat::Traceroute);
    let h2 = t.hops.iter().find(|h| h.ttl == 2).expect("hop 2");
    assert_eq!(h2.addrs, vec![ip("198.51.100.1")]);
    assert_eq!(h2.rtt_ms, vec![12.345]);

    let marked = " 1  * * * 198.51.100.1  12.345 ms !H\n";
    let t = parse_trace_text(marked).expect("parses");
    assert_eq!(t.format, TraceFormat::Traceroute);
    assert_eq!(t.hops[0].annotations, vec!["!H".to_owned()]);
}

#[test]
fn a_known_tool_is_read_without_detection() {
    // Headerless, nothing answered: detection has nothing to go on, but the
    // caller that ran traceroute knows what it printed.
    let text = " 1  * * *\n 2  * * *\n";
    assert!(parse_trace_text(text).is_err());
    let t = parse_trace_text_as(text, TraceFormat::Traceroute).expect("parses");
    assert_eq!(t.format, TraceFormat::Traceroute);
    assert_eq!(t.hops.len(), 2);
    assert!(t.hops.iter().all(|h| h.addrs.is_empty()));
}
