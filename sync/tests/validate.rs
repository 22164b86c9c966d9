//! Extract and validate: every quarantine code, the warnings, raw trace text
//! parsed into hops, and bodies that are not reports at all.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::fmt::Write as _;
use std::sync::LazyLock;

use lineprobe_shared::{Catalog, ReportLimits, TraceFormat};
use lineprobe_sync::{Extracted, Quarantine, ReasonCode, extract};
use proptest::prelude::*;
use serde_json::{Value, json};

static CATALOG: LazyLock<Catalog> = LazyLock::new(|| Catalog::embedded().unwrap());

const RID: &str = "01970a3c-5e2f-7b41-9c3d-2f6a8e1b4d70";
const NODE: &str = "edge-sz-1";

/// The Windows tracert output of a Chinese-language system.
const TRACERT_ZH: &str = "\r\n通过最多 30 个跃点跟踪\r\n到 www.example.cn [220.181.38.148] 的路由:\r\n\r\n  \
1    <1 毫秒   <1 毫秒   <1 毫秒 192.168.0.1\r\n  \
2     3 ms     2 ms     3 ms  100.65.0.1\r\n  \
3     *        *        *     请求超时。\r\n  \
4     4 ms     5 ms     4 ms  202.97.12.1\r\n  \
5     *        6 ms     5 ms  220.181.0.61\r\n  \
6     7 ms     6 ms     6 ms  220.181.38.148\r\n\r\n跟踪完成。\r\n";

/// A valid stored report from a China Mobile line in Shenzhen.
fn base() -> Value {
    json!({
        "schema": 1,
        "report_id": RID,
        "install_id": "GD-SZ-0007731",
        "account": "07550012345678",
        "created_at": "2025-06-03T21:14:09+08:00",
        "declared": {
            "province": "CN-GD",
            "city": "440300",
            "carrier": "china_mobile",
            "address": "广东省深圳市南山区某村 12 栋 301"
        },
        "device": {
            "os": "windows",
            "os_version": "10.0.22631",
            "arch": "x86_64",
            "agent_version": "0.1.0",
            "local_addrs": ["192.168.1.23"],
            "proxy": { "system_configured": false, "env_configured": false }
        },
        "trace": {
            "target": "probe.example.net",
            "target_addr": "198.51.100.10",
            "protocol": "icmp",
            "engine": "trippy-core",
            "started_at": "2025-06-03T21:13:58+08:00",
            "duration_ms": 11230,
            "hops": [
                { "ttl": 1, "addrs": ["192.168.1.1"], "rtt_ms": [0.5], "sent": 1, "received": 1 },
                { "ttl": 2, "addrs": ["120.196.10.1"], "rtt_ms": [3.1], "sent": 1, "received": 1 },
                { "ttl": 3, "addrs": [], "rtt_ms": [], "sent": 1, "received": 0 },
                { "ttl": 4, "addrs": ["198.51.100.10"], "rtt_ms": [12.5], "sent": 1, "received": 1 }
            ]
        },
        "envelope": {
            "received_at": "2025-06-03T13:14:15.204Z",
            "peer_ip": "120.196.200.7",
            "peer_port": 51234,
            "path": "/v1/reports",
            "node_id": NODE,
            "seq": 918_273
        }
    })
}

/// The base report sent by a system command: only the raw text, no hops.
fn with_raw(text: &str, command: &str) -> Value {
    let mut v = base();
    let trace = &mut v["trace"];
    trace["engine"] = json!(format!("system:{command}"));
    trace["hops"] = json!([]);
    trace["raw_text"] = json!(text);
    trace.as_object_mut().unwrap().remove("target_addr");
    v
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn ok(v: &Value) -> Extracted {
    match extract(&bytes(v), NODE, &CATALOG) {
        Ok(e) => e,
        Err(q) => panic!("quarantined: {}", q.summary()),
    }
}

fn quarantined(body: &[u8]) -> Quarantine {
    match extract(body, NODE, &CATALOG) {
        Ok(_) => panic!("accepted: {}", String::from_utf8_lossy(body)),
        Err(q) => q,
    }
}

fn codes(q: &Quarantine) -> Vec<&'static str> {
    q.reasons.iter().map(|r| r.code.as_str()).collect()
}

fn only(q: &Quarantine, code: ReasonCode) -> &lineprobe_sync::Reason {
    assert_eq!(codes(q), vec![code.as_str()], "{}", q.summary());
    &q.reasons[0]
}

#[test]
fn a_valid_report_passes_with_its_declared_line_as_catalog_ids() {
    let e = ok(&base());
    assert!(!e.hops_from_raw);
    assert_eq!(e.parsed_format, None);
    assert!(e.warnings.is_empty(), "{:?}", e.warnings);
    assert_eq!(e.declared.province.unwrap().as_str(), "CN-GD");
    assert_eq!(e.declared.city.as_deref(), Some("440300"));
    assert_eq!(e.declared.city_code.unwrap().as_str(), "440300");
    assert_eq!(e.declared.carrier.unwrap().as_str(), "china_mobile");
    assert_eq!(e.report.trace.hops.len(), 4);
}

#[test]
fn city_names_and_county_codes_are_normalised() {
    let mut v = base();
    v["declared"]["city"] = json!("深圳市");
    assert_eq!(ok(&v).declared.city_code.unwrap().as_str(), "440300");
    v["declared"]["city"] = json!("Shenzhen");
    assert_eq!(ok(&v).declared.city_code.unwrap().as_str(), "440300");
    // Nanshan district: below the catalog, kept as its own code, no warning.
    v["declared"]["city"] = json!("440305");
    let e = ok(&v);
    assert_eq!(e.declared.city_code.unwrap().as_str(), "440305");
    assert!(e.warnings.is_empty(), "{:?}", e.warnings);
}

#[test]
fn too_large_bodies_are_refused_before_decoding_with_ids_salvaged() {
    let mut body = bytes(&base());
    body.pop(); // the closing brace
    body.extend(std::iter::repeat_n(b' ', ReportLimits::MAX_REPORT_BYTES));
    body.push(b'}');
    let q = quarantined(&body);
    let r = only(&q, ReasonCode::TooLarge);
    assert!(r.message.contains("bytes"), "{}", r.message);
    assert_eq!(q.report_id.as_deref(), Some(RID));
    assert_eq!(q.install_id.as_deref(), Some("GD-SZ-0007731"));
}

#[test]
fn a_body_that_is_not_utf8_is_refused_and_its_ids_salvaged() {
    let mut body = bytes(&base());
    let at = body.windows(7).position(|w| w == b"address").unwrap();
    body[at + 12] = 0xff;
    let q = quarantined(&body);
    let r = only(&q, ReasonCode::NotUtf8);
    assert!(r.message.contains("not UTF-8"), "{}", r.message);
    assert_eq!(q.report_id.as_deref(), Some(RID));
    assert_eq!(q.install_id.as_deref(), Some("GD-SZ-0007731"));
}

#[test]
fn truncated_json_is_not_json_and_garbage_has_no_ids() {
    let body = bytes(&base());
    let q = quarantined(&body[..body.len() - 10]);
    let r = only(&q, ReasonCode::NotJson);
    assert!(r.message.contains("not JSON"), "{}", r.message);
    assert_eq!(q.report_id.as_deref(), Some(RID));

    let q = quarantined(b"GET / HTTP/1.1\r\n\r\n");
    only(&q, ReasonCode::NotJson);
    assert_eq!((q.report_id, q.install_id), (None, None));

    let q = quarantined(b"");
    only(&q, ReasonCode::NotJson);
}

#[test]
fn salvaged_ids_must_be_well_formed() {
    let q = quarantined(br#"{"report_id": "../../etc/passwd", "install_id": "x y", "#);
    only(&q, ReasonCode::NotJson);
    assert_eq!((q.report_id, q.install_id), (None, None));
}

#[test]
fn json_that_is_not_an_object_is_not_object() {
    for body in [&b"[1, 2]"[..], b"\"report\"", b"42", b"null", b"true"] {
        let q = quarantined(body);
        only(&q, ReasonCode::NotObject);
        assert_eq!(q.report_id, None);
    }
}

#[test]
fn an_unknown_or_missing_schema_version_is_unsupported_schema() {
    let mut v = base();
    v["schema"] = json!(2);
    let q = quarantined(&bytes(&v));
    let r = only(&q, ReasonCode::UnsupportedSchema);
    assert_eq!(r.field.as_deref(), Some("schema"));
    assert_eq!(q.report_id.as_deref(), Some(RID));

    v.as_object_mut().unwrap().remove("schema");
    let q = quarantined(&bytes(&v));
    only(&q, ReasonCode::UnsupportedSchema);
}

#[test]
fn schema_violations_name_their_field() {
    let mut v = base();
    v["declared"]["province"] = json!("guangdong");
    let q = quarantined(&bytes(&v));
    let r = only(&q, ReasonCode::SchemaViolation);
    assert_eq!(r.field.as_deref(), Some("declared.province"));
    assert_eq!(q.report_id.as_deref(), Some(RID));
    assert_eq!(q.install_id.as_deref(), Some("GD-SZ-0007731"));

    let mut v = base();
    v["trace"]["hops"][1]["ttl"] = json!(1);
    let q = quarantined(&bytes(&v));
    let r = only(&q, ReasonCode::SchemaViolation);
    assert_eq!(r.field.as_deref(), Some("trace.hops[1].ttl"));

    let mut v = base();
    v["surprise"] = json!(1);
    let q = quarantined(&bytes(&v));
    only(&q, ReasonCode::SchemaViolation);
}

#[test]
fn a_missing_envelope_has_its_own_code_also_beside_other_violations() {
    let mut v = base();
    v.as_object_mut().unwrap().remove("envelope");
    let q = quarantined(&bytes(&v));
    let r = only(&q, ReasonCode::MissingEnvelope);
    assert_eq!(r.field.as_deref(), Some("envelope"));
    assert_eq!(q.report_id.as_deref(), Some(RID));

    v["declared"]["city"] = json!("12345");
    let q = quarantined(&bytes(&v));
    assert_eq!(codes(&q), vec!["schema_violation", "missing_envelope"]);

    v["envelope"] = Value::Null;
    let q = quarantined(&bytes(&v));
    assert_eq!(codes(&q), vec!["schema_violation", "missing_envelope"]);
}

#[test]
fn a_broken_envelope_is_bad_envelope() {
    let mut v = base();
    v["envelope"]["peer_port"] = json!(0);
    let q = quarantined(&bytes(&v));
    let r = only(&q, ReasonCode::BadEnvelope);
    assert_eq!(r.field.as_deref(), Some("envelope.peer_port"));

    let mut v = base();
    v["envelope"]["path"] = json!("v1/reports");
    only(&quarantined(&bytes(&v)), ReasonCode::BadEnvelope);

    let mut v = base();
    v["envelope"]["seq"] = json!("one");
    only(&quarantined(&bytes(&v)), ReasonCode::BadEnvelope);
}

#[test]
fn an_envelope_from_another_node_is_refused() {
    let mut v = base();
    v["envelope"]["node_id"] = json!("edge-bj-2");
    let q = quarantined(&bytes(&v));
    let r = only(&q, ReasonCode::EnvelopeNodeMismatch);
    assert!(r.message.contains("\"edge-bj-2\""), "{}", r.message);
    assert!(r.message.contains("\"edge-sz-1\""), "{}", r.message);

    // Also noticed when the report is otherwise broken.
    v["declared"]["carrier"] = json!("China Mobile");
    let q = quarantined(&bytes(&v));
    assert_eq!(
        codes(&q),
        vec!["schema_violation", "envelope_node_mismatch"]
    );
}

#[test]
fn an_unknown_province_is_refused_with_a_readable_summary() {
    let mut v = base();
    v["declared"]["province"] = json!("CN-XX");
    v["declared"].as_object_mut().unwrap().remove("city");
    let q = quarantined(&bytes(&v));
    only(&q, ReasonCode::UnknownProvince);
    assert_eq!(
        q.summary(),
        "1 problem: declared.province: unknown province \"CN-XX\" (use an ISO 3166-2:CN code \
         such as CN-GD)"
    );
    assert_eq!(q.report_id.as_deref(), Some(RID));
}

#[test]
fn a_city_of_another_province_is_refused() {
    let mut v = base();
    v["declared"]["province"] = json!("CN-HB");
    v["declared"]["city"] = json!("深圳");
    let q = quarantined(&bytes(&v));
    let r = only(&q, ReasonCode::CityNotInProvince);
    assert!(r.message.contains("广东省 (CN-GD)"), "{}", r.message);
    assert!(r.message.contains("湖北省 (CN-HB)"), "{}", r.message);

    v["declared"]["city"] = json!("440305");
    let r = only(&quarantined(&bytes(&v)), ReasonCode::CityNotInProvince).clone();
    assert!(r.message.contains("广东省 (CN-GD)"), "{}", r.message);

    v["declared"]["city"] = json!("990100");
    only(&quarantined(&bytes(&v)), ReasonCode::CityNotInProvince);
}

#[test]
fn a_district_name_of_another_province_only_warns() {
    // Real districts of the declared province whose names the catalog
    // knows elsewhere: a Chongqing or Tianjin district of the same name, or
    // a prefecture city found by peeling the district's suffix.
    for (province, city) in [
        ("CN-ZJ", "江北区"), // Ningbo; also Chongqing
        ("CN-JS", "通州区"), // Nantong; also Beijing
        ("CN-LN", "和平区"), // Shenyang; also Tianjin
        ("CN-LN", "中山区"), // Dalian; peeled, 中山市 of Guangdong
        ("CN-JL", "西安区"), // Liaoyuan; peeled, 西安市 of Shaanxi
    ] {
        let mut v = base();
        v["declared"]["province"] = json!(province);
        v["declared"]["city"] = json!(city);
        let e = ok(&v);
        let codes: Vec<_> = e.warnings.iter().map(|w| w.code).collect();
        assert_eq!(codes, vec![ReasonCode::UnknownCity], "{province} {city}");
        assert_eq!(e.declared.city_code, None, "{province} {city}");
    }
    // Without a province such a name places the line nowhere, unless the
    // text names the province itself.
    let mut v = base();
    v["declared"].as_object_mut().unwrap().remove("province");
    v["declared"]["city"] = json!("中山区");
    assert_eq!(ok(&v).declared.city_code, None, "not Guangdong's 中山市");
    v["declared"]["city"] = json!("江北区");
    assert_eq!(ok(&v).declared.city_code, None, "not only Chongqing's");
    v["declared"]["city"] = json!("北京市海淀区");
    let code = ok(&v).declared.city_code.map(|c| c.as_str().to_owned());
    assert_eq!(code.as_deref(), Some("110108"));
    v["declared"]["city"] = json!("深圳");
    let code = ok(&v).declared.city_code.map(|c| c.as_str().to_owned());
    assert_eq!(code.as_deref(), Some("440300"));
    // A city (not a district) of another province is still refused.
    v["declared"]["province"] = json!("CN-LN");
    v["declared"]["city"] = json!("中山");
    only(&quarantined(&bytes(&v)), ReasonCode::CityNotInProvince);
}

#[test]
fn an_unknown_city_only_warns() {
    let mut v = base();
    v["declared"]["city"] = json!("某某镇");
    let e = ok(&v);
    assert_eq!(e.warnings.len(), 1);
    assert_eq!(e.warnings[0].code, ReasonCode::UnknownCity);
    assert_eq!(e.warnings[0].field.as_deref(), Some("declared.city"));
    assert_eq!(e.declared.city.as_deref(), Some("某某镇"));
    assert_eq!(e.declared.city_code, None);
}

#[test]
fn a_division_code_under_no_catalog_prefecture_is_not_compared() {
    // 371202: a district of the former Laiwu, merged into Jinan in 2019.
    let mut v = base();
    v["declared"]["province"] = json!("CN-SD");
    v["declared"]["city"] = json!("371202");
    let e = ok(&v);
    assert_eq!(e.warnings.len(), 1, "{:?}", e.warnings);
    assert_eq!(e.warnings[0].code, ReasonCode::UnknownCity);
    assert_eq!(e.declared.city.as_deref(), Some("371202"));
    assert_eq!(
        e.declared.city_code, None,
        "a code said to be uncomparable is kept"
    );
}

#[test]
fn unknown_and_hosting_carriers_are_refused() {
    let mut v = base();
    v["declared"]["carrier"] = json!("cmcc_gd");
    let r = only(&quarantined(&bytes(&v)), ReasonCode::UnknownCarrier).clone();
    assert!(
        r.message.contains("china_mobile (中国移动)"),
        "{}",
        r.message
    );

    v["declared"]["carrier"] = json!("alibaba_cloud");
    let r = only(&quarantined(&bytes(&v)), ReasonCode::CarrierNotDeclarable).clone();
    assert!(r.message.contains("hosting"), "{}", r.message);
}

#[test]
fn a_report_declaring_neither_carrier_nor_province_is_incomplete() {
    let mut v = base();
    let declared = v["declared"].as_object_mut().unwrap();
    declared.remove("province");
    declared.remove("carrier");
    let q = quarantined(&bytes(&v));
    let r = only(&q, ReasonCode::Incomplete);
    assert_eq!(r.field.as_deref(), Some("declared"));

    // Either one is enough.
    let mut v = base();
    v["declared"].as_object_mut().unwrap().remove("carrier");
    assert!(ok(&v).declared.carrier.is_none());
    let mut v = base();
    let declared = v["declared"].as_object_mut().unwrap();
    declared.remove("province");
    declared.remove("city");
    assert!(ok(&v).declared.province.is_none());
}

#[test]
fn a_trace_without_replies_is_incomplete() {
    let mut v = base();
    v["trace"]["hops"] = json!([]);
    let r = only(&quarantined(&bytes(&v)), ReasonCode::Incomplete).clone();
    assert_eq!(r.field.as_deref(), Some("trace.hops"));
    assert!(r.message.contains("has no hops"), "{}", r.message);

    v["trace"]["hops"] = json!([{ "ttl": 1, "sent": 3 }, { "ttl": 2, "sent": 3 }]);
    let r = only(&quarantined(&bytes(&v)), ReasonCode::Incomplete).clone();
    assert!(r.message.contains("no hop that answered"), "{}", r.message);

    // Both parts missing: one reason each.
    let declared = v["declared"].as_object_mut().unwrap();
    declared.remove("province");
    declared.remove("carrier");
    let q = quarantined(&bytes(&v));
    assert_eq!(codes(&q), vec!["incomplete", "incomplete"]);
    let summary = q.summary();
    assert!(summary.starts_with("2 problems: declared: "), "{summary}");
    assert!(
        summary.contains("; trace.hops: has no hop that answered"),
        "{summary}"
    );
}

#[test]
fn a_device_clock_far_ahead_warns_but_keeps_the_report() {
    let mut v = base();
    v["created_at"] = json!("2025-06-06T22:00:00+08:00");
    let e = ok(&v);
    assert_eq!(e.warnings.len(), 1);
    assert_eq!(e.warnings[0].code, ReasonCode::ClockSkew);
    assert!(
        e.warnings[0].message.contains("72 hours"),
        "{}",
        e.warnings[0].message
    );

    // Within a day, or late (spooled), is normal.
    v["created_at"] = json!("2025-06-04T20:00:00+08:00");
    assert!(ok(&v).warnings.is_empty());
    v["created_at"] = json!("2025-05-01T00:00:00+08:00");
    assert!(ok(&v).warnings.is_empty());
}

#[test]
fn hop_addresses_no_router_answers_from_warn_but_keep_the_report() {
    let mut v = base();
    v["trace"]["hops"] = json!([
        { "ttl": 1, "addrs": ["192.168.1.1"], "rtt_ms": [0.4] },
        { "ttl": 2, "addrs": ["0.0.0.0"], "rtt_ms": [1.0] },
        { "ttl": 3, "addrs": ["120.196.10.1", "224.0.0.5"], "rtt_ms": [5.0, 5.1] },
        { "ttl": 4, "addrs": ["255.255.255.255", "ff02::1"], "rtt_ms": [6.0, 6.0] },
        { "ttl": 5, "addrs": ["221.183.1.1"], "rtt_ms": [8.0] },
    ]);
    let e = ok(&v);
    let warned: Vec<(&str, Option<&str>)> = e
        .warnings
        .iter()
        .map(|w| (w.code.as_str(), w.field.as_deref()))
        .collect();
    assert_eq!(
        warned,
        [
            ("impossible_hop_address", Some("trace.hops[1].addrs[0]")),
            ("impossible_hop_address", Some("trace.hops[2].addrs[1]")),
            ("impossible_hop_address", Some("trace.hops[3].addrs[0]")),
        ]
    );
    assert!(
        e.warnings[0].message.contains("TTL 2 lists 0.0.0.0"),
        "{}",
        e.warnings[0].message
    );
    assert!(e.warnings[1].message.contains("multicast"));
    assert!(e.warnings[2].message.contains("broadcast"));
    // Ordinary hops warn of nothing.
    assert!(ok(&base()).warnings.is_empty());
}

#[test]
fn a_chinese_tracert_text_is_parsed_into_hops() {
    let e = ok(&with_raw(TRACERT_ZH, "tracert"));
    assert!(e.hops_from_raw);
    assert_eq!(e.parsed_format, Some(TraceFormat::WindowsTracert));
    let hops = &e.report.trace.hops;
    assert_eq!(hops.len(), 6);
    assert_eq!(
        hops[0].addrs,
        vec!["192.168.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    assert!(hops[2].addrs.is_empty());
    assert_eq!(hops[3].addrs[0].to_string(), "202.97.12.1");
    assert_eq!(hops[3].rtt_ms, vec![4.0, 5.0, 4.0]);
    // The destination the text names becomes the trace's target address.
    assert_eq!(
        e.report.trace.target_addr.unwrap().to_string(),
        "220.181.38.148"
    );
    assert!(e.warnings.is_empty(), "{:?}", e.warnings);
    // Hops the probe sent are kept as they are.
    let mut v = with_raw(TRACERT_ZH, "tracert");
    v["trace"]["hops"] = base()["trace"]["hops"].clone();
    let e = ok(&v);
    assert!(!e.hops_from_raw);
    assert_eq!(e.report.trace.hops.len(), 4);
}

#[test]
fn a_raw_format_the_text_does_not_have_warns() {
    let mut v = with_raw(TRACERT_ZH, "tracert");
    v["trace"]["raw_format"] = json!("traceroute");
    let e = ok(&v);
    assert_eq!(e.warnings.len(), 1);
    assert_eq!(e.warnings[0].code, ReasonCode::RawFormatMismatch);
    assert_eq!(e.parsed_format, Some(TraceFormat::WindowsTracert));
}

#[test]
fn an_unrecognised_raw_text_is_unparseable() {
    let q = quarantined(&bytes(&with_raw("hello, this is not a trace\n", "tracert")));
    let r = only(&q, ReasonCode::UnparseableTrace);
    assert_eq!(r.field.as_deref(), Some("trace.raw_text"));
    assert!(
        r.message.contains("unrecognized trace text"),
        "{}",
        r.message
    );
    assert_eq!(q.report_id.as_deref(), Some(RID));
}

#[test]
fn raw_text_giving_hops_the_schema_refuses_is_unparseable() {
    // 70 hops: more than a report may carry.
    let mut text =
        String::from("traceroute to 198.51.100.10 (198.51.100.10), 30 hops max, 60 byte packets\n");
    for ttl in 1..=70 {
        writeln!(text, " {ttl}  10.0.{ttl}.1  1.000 ms").unwrap();
    }
    let q = quarantined(&bytes(&with_raw(&text, "traceroute")));
    let r = only(&q, ReasonCode::UnparseableTrace);
    assert_eq!(r.field.as_deref(), Some("trace.hops"));
    assert!(r.message.contains("at most 64"), "{}", r.message);
}

#[test]
fn raw_text_with_only_silent_hops_is_incomplete() {
    let text = "traceroute to 198.51.100.10 (198.51.100.10), 30 hops max, 60 byte packets\n \
                1  * * *\n 2  * * *\n";
    let r = only(
        &quarantined(&bytes(&with_raw(text, "traceroute"))),
        ReasonCode::Incomplete,
    )
    .clone();
    assert!(
        r.message.contains("after parsing the raw text"),
        "{}",
        r.message
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let mut v = base();
    v["declared"]["province"] = json!("CN-XX");
    v["declared"]["carrier"] = json!("alibaba_cloud");
    v["envelope"]["node_id"] = json!("edge-x");
    v["trace"]["hops"] = json!([]);
    let q = quarantined(&bytes(&v));
    assert_eq!(
        codes(&q),
        vec![
            "envelope_node_mismatch",
            "unknown_province",
            "carrier_not_declarable",
            "incomplete"
        ]
    );
    assert!(q.summary().starts_with("4 problems: "), "{}", q.summary());
    // The record serialises with its codes.
    let json = serde_json::to_value(&q).unwrap();
    assert_eq!(json["reasons"][0]["code"], "envelope_node_mismatch");
    assert_eq!(json["reasons"][1]["field"], "declared.province");
    assert_eq!(json["report_id"], RID);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn extract_never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = extract(&body, NODE, &CATALOG);
    }

    #[test]
    fn extract_never_panics_on_damaged_reports(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut body = bytes(&with_raw(TRACERT_ZH, "tracert"));
        for (at, byte) in edits {
            let i = at.index(body.len());
            body[i] = byte;
        }
        let keep = cut.index(body.len() + 1);
        body.truncate(keep.max(body.len() / 2));
        match extract(&body, NODE, &CATALOG) {
            Ok(e) => prop_assert!(!e.report.trace.hops.is_empty()),
            Err(q) => prop_assert!(!q.reasons.is_empty()),
        }
    }
}
