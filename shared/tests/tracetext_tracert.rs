//! Windows `tracert` in many display languages, from composed fixtures.

use std::net::IpAddr;

use lineprobe_shared::{Error, Hop, ParsedTrace, TraceFormat, parse_trace_text};

/// What a fixture must parse to.
struct Case {
    file: &'static str,
    locale: Option<&'static str>,
    target: Option<&'static str>,
    target_addr: Option<&'static str>,
    max_hops: Option<u8>,
    hops: &'static [(u8, &'static [&'static str])],
}

const CASES: &[Case] = &[
    Case {
        file: "en_hostname.txt",
        locale: Some("en"),
        target: Some("www.example.net"),
        target_addr: Some("93.184.215.14"),
        max_hops: Some(30),
        hops: &[
            (1, &["192.168.1.1"]),
            (2, &["100.64.0.1"]),
            (3, &[]),
            (4, &["203.0.113.9"]),
            (5, &["198.51.100.20"]),
            (6, &["198.51.100.77"]),
            (7, &["93.184.215.14"]),
        ],
    },
    Case {
        file: "en_ip_unreachable.txt",
        locale: Some("en"),
        target: Some("10.20.30.40"),
        target_addr: Some("10.20.30.40"),
        max_hops: Some(15),
        hops: &[(1, &["10.0.0.1"]), (2, &["10.1.0.1"]), (3, &["10.1.0.1"])],
    },
    Case {
        file: "en_ipv6.txt",
        locale: Some("en"),
        target: Some("ipv6.example.org"),
        target_addr: Some("2001:db8:100::15"),
        max_hops: Some(30),
        hops: &[
            (1, &["fe80::1"]),
            (2, &["2001:db8:1::1"]),
            (3, &[]),
            (4, &["2001:db8:ff::2"]),
            (5, &["2001:db8:100::15"]),
        ],
    },
    Case {
        file: "zh-CN_hostname.txt",
        locale: Some("zh-CN"),
        target: Some("www.example.cn"),
        target_addr: Some("220.181.38.148"),
        max_hops: Some(30),
        hops: &[
            (1, &["192.168.0.1"]),
            (2, &["100.65.0.1"]),
            (3, &[]),
            (4, &["202.97.12.1"]),
            (5, &["220.181.0.61"]),
            (6, &["220.181.38.148"]),
        ],
    },
    Case {
        file: "zh-CN_ip_unreachable.txt",
        locale: Some("zh-CN"),
        target: Some("10.9.8.7"),
        target_addr: Some("10.9.8.7"),
        max_hops: Some(30),
        hops: &[
            (1, &["192.168.31.1"]),
            (2, &["10.9.0.1"]),
            (3, &["10.9.0.1"]),
        ],
    },
    Case {
        file: "zh-TW_hostname.txt",
        locale: Some("zh-TW"),
        target: Some("www.example.tw"),
        target_addr: Some("203.66.88.89"),
        max_hops: Some(30),
        hops: &[
            (1, &["192.168.1.254"]),
            (2, &["168.95.98.254"]),
            (3, &[]),
            (4, &["220.128.1.90"]),
            (5, &["203.66.88.89"]),
        ],
    },
    Case {
        file: "ja_ip.txt",
        locale: Some("ja"),
        target: Some("8.8.8.8"),
        target_addr: Some("8.8.8.8"),
        max_hops: Some(30),
        hops: &[
            (1, &["192.168.10.1"]),
            (2, &["219.0.0.1"]),
            (3, &[]),
            (4, &["72.14.202.1"]),
            (5, &["8.8.8.8"]),
        ],
    },
    Case {
        file: "ko_hostname.txt",
        locale: Some("ko"),
        target: Some("www.example.kr"),
        target_addr: Some("211.234.10.25"),
        max_hops: Some(30),
        hops: &[
            (1, &["192.168.0.1"]),
            (2, &["121.134.0.1"]),
            (3, &[]),
            (4, &["112.174.8.1"]),
            (5, &["211.234.10.25"]),
        ],
    },
    Case {
        file: "fr_hostname.txt",
        locale: Some("fr"),
        target: Some("exemple.fr"),
        target_addr: Some("185.31.40.11"),
        max_hops: Some(30),
        hops: &[
            (1, &["192.168.1.254"]),
            (2, &["80.10.236.1"]),
            (3, &[]),
            (4, &["193.252.98.161"]),
            (5, &["185.31.40.11"]),
        ],
    },
    Case {
        file: "fr_ip_oldapostrophe.txt",
        locale: Some("fr"),
        target: Some("192.0.2.80"),
        target_addr: Some("192.0.2.80"),
        max_hops: Some(30),
        hops: &[(1, &["192.168.1.1"]), (2, &[]), (3, &["192.0.2.80"])],
    },
    Case {
        file: "de_hostname.txt",
        locale: Some("de"),
        target: Some("www.beispiel.de"),
        target_addr: Some("81.169.145.105"),
        max_hops: Some(30),
        hops: &[
            (1, &["192.168.178.1"]),
            (2, &["62.155.240.161"]),
            (3, &[]),
            (4, &["217.239.53.226"]),
            (5, &["81.169.145.105"]),
        ],
    },
    Case {
        file: "es_hostname.txt",
        locale: Some("es"),
        target: Some("www.ejemplo.es"),
        target_addr: Some("212.230.1.5"),
        max_hops: Some(30),
        hops: &[
            (1, &["192.168.1.1"]),
            (2, &["10.15.0.1"]),
            (3, &[]),
            (4, &["212.230.1.5"]),
        ],
    },
    Case {
        file: "es_ip.txt",
        locale: Some("es"),
        target: Some("1.1.1.1"),
        target_addr: Some("1.1.1.1"),
        max_hops: Some(30),
        hops: &[(1, &["192.168.1.1"]), (2, &[]), (3, &["1.1.1.1"])],
    },
    Case {
        file: "pt-BR_hostname.txt",
        locale: Some("pt-BR"),
        target: Some("www.exemplo.com.br"),
        target_addr: Some("200.147.67.142"),
        max_hops: Some(30),
        hops: &[
            (1, &["192.168.0.1"]),
            (2, &["201.17.0.1"]),
            (3, &[]),
            (4, &["200.147.67.142"]),
        ],
    },
    Case {
        file: "pt-PT_hostname.txt",
        locale: Some("pt-PT"),
        target: Some("www.exemplo.pt"),
        target_addr: Some("193.136.2.20"),
        max_hops: Some(30),
        hops: &[(1, &["192.168.1.254"]), (2, &[]), (3, &["193.136.2.20"])],
    },
    Case {
        file: "ru_hostname.txt",
        locale: Some("ru"),
        target: Some("www.primer.ru"),
        target_addr: Some("95.213.11.180"),
        max_hops: Some(30),
        hops: &[
            (1, &["192.168.0.1"]),
            (2, &["10.250.0.1"]),
            (3, &[]),
            (4, &["95.213.11.180"]),
        ],
    },
    Case {
        file: "it_hostname.txt",
        locale: Some("it"),
        target: Some("www.esempio.it"),
        target_addr: Some("151.1.1.8"),
        max_hops: Some(30),
        hops: &[(1, &["192.168.1.1"]), (2, &[]), (3, &["151.1.1.8"])],
    },
    Case {
        file: "pl_hostname.txt",
        locale: Some("pl"),
        target: Some("www.przyklad.pl"),
        target_addr: Some("212.77.98.9"),
        max_hops: Some(30),
        hops: &[(1, &["192.168.1.1"]), (2, &[]), (3, &["212.77.98.9"])],
    },
    Case {
        file: "tr_hostname.txt",
        locale: Some("tr"),
        target: Some("www.ornek.com.tr"),
        target_addr: Some("185.60.216.35"),
        max_hops: Some(30),
        hops: &[(1, &["192.168.1.1"]), (2, &[]), (3, &["185.60.216.35"])],
    },
    Case {
        file: "hops_only.txt",
        locale: Some("zh-CN"),
        target: None,
        target_addr: None,
        max_hops: None,
        hops: &[(3, &["61.152.0.1"]), (4, &[]), (5, &["202.97.33.14"])],
    },
];

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/tracert/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn hop_list(trace: &ParsedTrace) -> Vec<(u8, Vec<IpAddr>)> {
    trace
        .hops
        .iter()
        .map(|h| (h.ttl, h.addrs.clone()))
        .collect()
}

fn check(case: &Case, trace: &ParsedTrace) {
    let want: Vec<(u8, Vec<IpAddr>)> = case
        .hops
        .iter()
        .map(|(t, a)| (*t, a.iter().map(|s| ip(s)).collect()))
        .collect();
    assert_eq!(trace.format, TraceFormat::WindowsTracert, "{}", case.file);
    assert_eq!(hop_list(trace), want, "{}", case.file);
    assert_eq!(trace.locale.as_deref(), case.locale, "{}", case.file);
    assert_eq!(trace.target.as_deref(), case.target, "{}", case.file);
    assert_eq!(trace.target_addr, case.target_addr.map(ip), "{}", case.file);
    assert_eq!(trace.max_hops, case.max_hops, "{}", case.file);
}

#[test]
fn every_locale_fixture_parses_exactly() {
    for case in CASES {
        let trace =
            parse_trace_text(&fixture(case.file)).unwrap_or_else(|e| panic!("{}: {e}", case.file));
        check(case, &trace);
    }
}

#[test]
fn line_endings_tabs_bom_and_trailing_spaces_do_not_matter() {
    for case in CASES {
        let text = fixture(case.file);
        let variants = [
            text.replace('\n', "\r\n").replace("\r\r\n", "\r\n"),
            format!("\u{feff}{text}"),
            text.lines()
                .map(|l| format!("{l}   \t"))
                .collect::<Vec<_>>()
                .join("\n"),
            text.replace("    ", "\t"),
            text.replace('\n', "\r\r\n"),
        ];
        for v in &variants {
            let trace = parse_trace_text(v).unwrap_or_else(|e| panic!("{}: {e}", case.file));
            check(case, &trace);
        }
    }
}

fn hop(trace: &ParsedTrace, ttl: u8) -> &Hop {
    trace
        .hops
        .iter()
        .find(|h| h.ttl == ttl)
        .unwrap_or_else(|| panic!("no hop {ttl}"))
}

#[test]
fn hop_fields_names_times_counts() {
    let trace = parse_trace_text(&fixture("en_hostname.txt")).expect("parses");
    let h1 = hop(&trace, 1);
    assert_eq!(h1.names, vec!["router.lan".to_owned()]);
    assert_eq!(h1.rtt_ms, vec![0.5, 0.5, 0.5]);
    assert_eq!((h1.sent, h1.received), (3, 3));
    let h3 = hop(&trace, 3);
    assert!(h3.is_silent());
    assert_eq!((h3.sent, h3.received), (3, 0));
    assert!(h3.rtt_ms.is_empty());
    let h5 = hop(&trace, 5);
    assert!(h5.names.is_empty());
    assert_eq!(h5.rtt_ms, vec![15.0, 14.0]);
    assert_eq!((h5.sent, h5.received), (3, 2));
    let h6 = hop(&trace, 6);
    assert_eq!(h6.rtt_ms, vec![14.0, 15.0]);

    let zh = parse_trace_text(&fixture("zh-CN_hostname.txt")).expect("parses");
    assert_eq!(hop(&zh, 1).rtt_ms, vec![0.5, 0.5, 0.5]);
    let ru = parse_trace_text(&fixture("ru_hostname.txt")).expect("parses");
    assert_eq!(hop(&ru, 2).rtt_ms, vec![3.0, 2.0, 3.0]);
}

#[test]
fn reported_errors_become_marks() {
    let en = parse_trace_text(&fixture("en_ip_unreachable.txt")).expect("parses");
    let h3 = hop(&en, 3);
    assert_eq!(h3.annotations, vec!["!H".to_owned()]);
    assert!(h3.rtt_ms.is_empty());
    let zh = parse_trace_text(&fixture("zh-CN_ip_unreachable.txt")).expect("parses");
    assert_eq!(hop(&zh, 3).annotations, vec!["!N".to_owned()]);

    let text = "Tracing route to 192.0.2.1 over a maximum of 30 hops\n\n  \
                1     2 ms     *     gw.example [10.0.0.1]  reports: Destination protocol unreachable.\n";
    let t = parse_trace_text(text).expect("parses");
    let h = hop(&t, 1);
    assert_eq!(h.addrs, vec![ip("10.0.0.1")]);
    assert_eq!(h.names, vec!["gw.example".to_owned()]);
    assert_eq!(h.annotations, vec!["!P".to_owned()]);
    assert_eq!(h.rtt_ms, vec![2.0]);
}

#[test]
fn ipv6_zone_ids_are_dropped_and_bracketed_addresses_read() {
    let text = "  1    <1 ms    <1 ms    <1 ms  fe80::1%12\n  \
                2     3 ms     2 ms     2 ms  [2001:db8::2%eth0]\n  \
                3     4 ms     3 ms     3 ms  host.example [2001:db8::3]\n";
    let t = parse_trace_text(text).expect("parses");
    assert_eq!(
        hop_list(&t),
        vec![
            (1, vec![ip("fe80::1")]),
            (2, vec![ip("2001:db8::2")]),
            (3, vec![ip("2001:db8::3")]),
        ]
    );
}

#[test]
fn duplicate_out_of_order_and_truncated_lines() {
    let text = "Tracing route to 192.0.2.9 over a maximum of 30 hops\n\n  \
                2     5 ms     4 ms     4 ms  10.0.1.1\n  \
                1    <1 ms    <1 ms    <1 ms  10.0.0.1\n  \
                2     6 ms     5 ms     5 ms  10.0.1.2\n  \
                3     7 ms     6 ms";
    let t = parse_trace_text(text).expect("parses");
    assert_eq!(
        hop_list(&t),
        vec![
            (1, vec![ip("10.0.0.1")]),
            (2, vec![ip("10.0.1.1"), ip("10.0.1.2")]),
        ]
    );
    assert_eq!(hop(&t, 2).sent, 6);
    // A cut-off timeout line is still a silent hop.
    let t = parse_trace_text("  1    <1 ms    <1 ms    <1 ms  10.0.0.1\n  2     *        *")
        .expect("parses");
    assert_eq!(hop_list(&t), vec![(1, vec![ip("10.0.0.1")]), (2, vec![])]);
}

#[test]
fn an_unknown_language_still_parses() {
    // Czech-like wording the table need not know; the hop shape carries it.
    let text = "Výpis trasy k cesta.example [198.51.100.4]\ns nejvýše 30 směrováními:\n\n  \
                1    <1 ms    <1 ms    <1 ms  192.168.1.1\n  \
                2     *        *        *     Něco úplně jiného.\n  \
                3     5 ms     4 ms     5 ms  cesta.example [198.51.100.4]\n";
    let t = parse_trace_text(text).expect("parses");
    assert_eq!(t.target.as_deref(), Some("cesta.example"));
    assert_eq!(t.max_hops, Some(30));
    assert_eq!(
        hop_list(&t),
        vec![
            (1, vec![ip("192.168.1.1")]),
            (2, vec![]),
            (3, vec![ip("198.51.100.4")]),
        ]
    );
    let unknown = "Xyz abc 198.51.100.4 qrs 20\n\n  \
                   1    <1 ms    <1 ms    <1 ms  192.168.1.1\n  \
                   2     *        *        *     Qwerty.\n";
    let t = parse_trace_text(unknown).expect("parses");
    assert_eq!(t.locale, None);
    assert_eq!(t.target_addr, Some(ip("198.51.100.4")));
    assert_eq!(t.max_hops, Some(20));
    assert_eq!(t.hops.len(), 2);
}

#[test]
fn malformed_hop_line_is_reported_with_its_line() {
    let text = "Tracing route to 192.0.2.9 over a maximum of 30 hops\n\n  \
                1    <1 ms    <1 ms    <1 ms  10.0.0.1\n  \
                2     5 ms     4 ms     4 ms  ???garbage\n  \
                3     5 ms     4 ms     4 ms  10.0.0.3\n";
    match parse_trace_text(text) {
        Err(Error::MalformedTrace {
            format,
            line,
            reason,
        }) => {
            assert_eq!(format, TraceFormat::WindowsTracert);
            assert_eq!(line, 4);
            assert!(reason.contains("address"), "{reason}");
        }
        other => panic!("expected MalformedTrace, got {other:?}"),
    }
}

#[test]
fn other_tools_and_noise_are_not_claimed() {
    let others = [
        "traceroute to 192.0.2.1 (192.0.2.1), 30 hops max, 60 byte packets\n \
         1  192.168.1.1  0.512 ms  0.480 ms  0.470 ms\n 2  * * *\n",
        " 1  192.168.1.1  0.512 ms  0.480 ms  0.470 ms\n 2  *  *  63.375 ms !H\n",
        " 1?: [LOCALHOST]                      pmtu 1500\n \
         1:  192.168.1.1                                           0.400ms\n",
        "HOST: box                         Loss%   Snt   Last   Avg  Best  Wrst StDev\n  \
         1.|-- 192.168.1.1                0.0%     1    0.4   0.4   0.4   0.4   0.0\n",
    ];
    for text in others {
        if let Ok(t) = parse_trace_text(text) {
            assert_ne!(t.format, TraceFormat::WindowsTracert, "claimed: {text}");
        }
    }
    for text in [
        "",
        "hello world\n",
        "Pinging 192.0.2.1 with 32 bytes of data:\nRequest timed out.\n",
    ] {
        assert!(
            matches!(parse_trace_text(text), Err(Error::UnrecognizedTrace { .. })),
            "{text:?}"
        );
    }
}
