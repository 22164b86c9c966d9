//! Report schema v1: round trips, every limit and rule, decoding errors that
//! name their field, and the envelope rules.

use lineprobe_shared::{
    EnvelopeHeaders, Error, Hop, MacAddress, Report, ReportId, ReportLimits, TraceEngine,
    Violation, account_problem, is_invisible_format, single_line_problem,
};
use serde_json::{Value, json};

fn fixture_text(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/report/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn fixture(name: &str) -> Value {
    serde_json::from_str(&fixture_text(name)).expect("fixture is JSON")
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("serializes")
}

/// Replaces the value at a JSON pointer (the parent must exist).
fn set(doc: &mut Value, pointer: &str, new: Value) {
    *doc.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer} in fixture")) = new;
}

/// Inserts or replaces a key in the object at `pointer`.
fn put(doc: &mut Value, pointer: &str, key: &str, new: Value) {
    doc.pointer_mut(pointer)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("no object at {pointer}"))
        .insert(key.to_owned(), new);
}

fn remove(doc: &mut Value, pointer: &str, key: &str) {
    doc.pointer_mut(pointer)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("no object at {pointer}"))
        .remove(key)
        .unwrap_or_else(|| panic!("no {key} at {pointer}"));
}

fn violations_of(result: Result<Report, Error>) -> Vec<Violation> {
    match result {
        Err(Error::InvalidReport(v)) => v.0,
        Err(other) => panic!("expected InvalidReport, got {other}"),
        Ok(_) => panic!("expected the report to be rejected"),
    }
}

/// Asserts decoding `doc` fails with a violation at `field` whose reason
/// contains every fragment.
fn rejects(doc: &Value, field: &str, fragments: &[&str]) {
    let found = violations_of(Report::from_json(&bytes(doc)));
    let hit = found.iter().find(|v| v.field == field).unwrap_or_else(|| {
        panic!("no violation at {field}; found {found:#?}");
    });
    for fragment in fragments {
        assert!(
            hit.reason.contains(fragment),
            "reason for {field} lacks {fragment:?}: {}",
            hit.reason
        );
    }
}

/// Asserts a report built in code breaks exactly one rule, at `field`.
fn violates(report: &Report, field: &str, fragments: &[&str]) {
    let found = report.violations().0;
    assert_eq!(
        found.len(),
        1,
        "expected one violation at {field}: {found:#?}"
    );
    assert_eq!(found[0].field, field, "{found:#?}");
    for fragment in fragments {
        assert!(found[0].reason.contains(fragment), "{}", found[0].reason);
    }
}

fn full() -> Report {
    Report::from_stored_json(fixture_text("full_stored.json").as_bytes()).expect("full fixture")
}

// --- round trips -----------------------------------------------------------

#[test]
fn full_report_round_trips_exactly() {
    let original = fixture("full_stored.json");
    let report = Report::from_stored_json(&bytes(&original)).expect("valid");
    let encoded = report.to_json().expect("encodes");
    let again = Report::from_stored_json(&encoded).expect("re-decodes");
    assert_eq!(again, report);
    let as_value: Value = serde_json::from_slice(&encoded).expect("JSON");
    assert_eq!(as_value, original, "encoding changed the document");
    assert!(report.violations().is_empty());
    // Spot checks that the fields landed where they should.
    assert_eq!(report.trace.hops.len(), 5);
    assert_eq!(report.trace.engine, TraceEngine::WindowsIcmp);
    assert_eq!(
        report.device.mac.map(|m| m.to_string()).as_deref(),
        Some("3c:7c:3f:12:ab:9e")
    );
    let envelope = report.envelope.as_ref().expect("envelope");
    assert_eq!(envelope.headers.get("X-Real-IP"), Some("203.0.113.77"));
    assert_eq!(envelope.seq, 918_273);
}

/// A round-trip time written with more digits than a double holds reads
/// as the nearest double, and written back and read again it is the same:
/// `serde_json`'s fast float parser could land one unit off (found by the
/// `report_ingest` fuzz target), so a stored report read back differed.
#[test]
fn long_decimal_round_trip_times_survive_a_round_trip() {
    let text = bytes(&fixture("full_stored.json"));
    let text = String::from_utf8(text).expect("utf-8");
    let at = text.find("\"rtt_ms\":[").expect("a hop with times") + "\"rtt_ms\":[".len();
    let long = "1.166666666666666666666666666666666666666666666666666,";
    let text = format!("{}{long}{}", &text[..at], &text[at..]);
    let report = Report::from_stored_json(text.as_bytes()).expect("valid");
    let rtt = report
        .trace
        .hops
        .iter()
        .find_map(|h| h.rtt_ms.first().copied())
        .expect("a time");
    assert_eq!(rtt.to_bits(), (7.0_f64 / 6.0).to_bits(), "{rtt:?}");
    let again = Report::from_stored_json(&report.to_json().expect("encodes")).expect("re-decodes");
    assert_eq!(again, report);
}

#[test]
fn minimal_report_round_trips() {
    let report =
        Report::from_submitted_json(fixture_text("minimal.json").as_bytes()).expect("valid");
    assert!(report.declared.province.is_none());
    assert!(report.trace.hops.is_empty());
    assert!(report.envelope.is_none() && report.consent.is_none());
    let encoded = report.to_json().expect("encodes");
    let text = String::from_utf8(encoded.clone()).expect("utf-8");
    for absent in [
        "envelope",
        "consent",
        "endpoint_attempts",
        "spool_evicted",
        "raw_text",
        "\"mac\"",
    ] {
        assert!(!text.contains(absent), "{absent} serialized: {text}");
    }
    assert_eq!(
        Report::from_submitted_json(&encoded).expect("re-decodes"),
        report
    );
    let pretty = report.to_json_pretty().expect("pretty");
    assert_eq!(
        Report::from_json(pretty.as_bytes()).expect("pretty decodes"),
        report
    );
}

#[test]
fn system_engine_report_carries_raw_text() {
    let report =
        Report::from_submitted_json(fixture_text("system_engine.json").as_bytes()).expect("valid");
    assert_eq!(
        report.trace.engine,
        TraceEngine::System("tracert".to_owned())
    );
    assert!(
        report
            .trace
            .raw_text
            .as_deref()
            .is_some_and(|t| t.contains("Trace complete."))
    );
    let again = Report::from_json(&report.to_json().expect("encodes")).expect("re-decodes");
    assert_eq!(again, report);
}

#[test]
fn example_config_report_is_a_valid_submission() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/report.example.json");
    let text = std::fs::read_to_string(path).expect("config/report.example.json");
    let report = Report::from_submitted_json(text.as_bytes()).expect("example validates");
    assert!(!report.trace.hops.is_empty());
}

#[test]
fn a_report_built_in_code_validates_and_round_trips() {
    let mut report = full();
    report.report_id = ReportId::new_v7();
    report.envelope = None;
    report.validate_submitted().expect("valid submission");
    let again = Report::from_submitted_json(&report.to_json().expect("encodes")).expect("decodes");
    assert_eq!(again, report);
}

// --- schema version and identity -------------------------------------------

#[test]
fn other_schema_versions_are_rejected_with_the_supported_list() {
    let mut doc = fixture("minimal.json");
    set(&mut doc, "/schema", json!(2));
    // A field from a hypothetical v2 must not hide the version problem.
    put(&mut doc, "", "v2_field", json!(true));
    let found = violations_of(Report::from_json(&bytes(&doc)));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].field, "schema");
    assert!(
        found[0].reason.contains("version 2 is not supported"),
        "{}",
        found[0].reason
    );
    assert!(
        found[0].reason.contains("versions 1"),
        "{}",
        found[0].reason
    );

    set(&mut doc, "/schema", json!("1"));
    rejects(&doc, "schema", &["not supported"]);
    remove(&mut doc, "", "schema");
    rejects(&doc, "schema", &["missing"]);

    let mut report = full();
    report.schema = 3;
    report.envelope = None;
    assert!(report.validate_submitted().is_err());
}

#[test]
fn report_id_must_be_a_canonical_uuid_v7() {
    let mut doc = fixture("minimal.json");
    set(
        &mut doc,
        "/report_id",
        json!("3f2b8c1e-4d5a-4e6f-9a7b-8c9d0e1f2a3b"),
    );
    rejects(&doc, "report_id", &["version 4", "UUIDv7"]);
    set(
        &mut doc,
        "/report_id",
        json!("01970A41-0B6D-7E02-8A11-55C0D7F3E912"),
    );
    rejects(&doc, "report_id", &["lowercase hyphenated"]);
    set(&mut doc, "/report_id", json!("not-a-uuid"));
    rejects(&doc, "report_id", &["`not-a-uuid`"]);
    // Version nibble 7 but the NCS variant.
    set(
        &mut doc,
        "/report_id",
        json!("01970a41-0b6d-7e02-0a11-55c0d7f3e912"),
    );
    rejects(&doc, "report_id", &["variant"]);

    assert!(ReportId::parse("01970a41-0b6d-7e02-8a11-55c0d7f3e912").is_ok());
    let fresh = ReportId::new_v7();
    assert_eq!(
        ReportId::parse(&fresh.to_string()).expect("own ids parse"),
        fresh
    );
    assert!(ReportId::from_uuid(uuid::Uuid::nil()).is_err());
}

#[test]
fn install_id_must_be_a_bounded_token() {
    let mut doc = fixture("minimal.json");
    set(&mut doc, "/install_id", json!(""));
    rejects(&doc, "install_id", &["empty"]);
    set(&mut doc, "/install_id", json!("a".repeat(65)));
    rejects(&doc, "install_id", &["65 characters", "at most 64"]);
    set(&mut doc, "/install_id", json!("term id/1"));
    rejects(&doc, "install_id", &["not a terminal ID"]);
    set(&mut doc, "/install_id", json!("-leading"));
    rejects(&doc, "install_id", &["starting with a letter or digit"]);
}

// --- decoding errors name their field ------------------------------------

#[test]
fn unknown_fields_are_rejected_with_their_name() {
    let mut doc = fixture("full_stored.json");
    put(&mut doc, "", "surprise", json!(1));
    rejects(&doc, "surprise", &["unknown field `surprise`"]);

    let mut doc = fixture("full_stored.json");
    put(&mut doc, "/trace/hops/3", "asn", json!(4134));
    rejects(&doc, "trace.hops[3].asn", &["unknown field `asn`"]);

    let mut doc = fixture("full_stored.json");
    put(&mut doc, "/declared/location", "altitude", json!(10));
    rejects(
        &doc,
        "declared.location.altitude",
        &["unknown field `altitude`"],
    );

    let mut doc = fixture("full_stored.json");
    put(&mut doc, "/envelope/headers", "cookie", json!("s=1"));
    rejects(
        &doc,
        "envelope.headers.cookie",
        &["unknown field `cookie`", "user-agent"],
    );
}

#[test]
fn wrong_types_and_missing_fields_name_the_field() {
    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/trace/hops/2/ttl", json!("three"));
    rejects(&doc, "trace.hops[2].ttl", &["invalid type", "line 1"]);

    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/trace/hops/2/ttl", json!(256));
    rejects(&doc, "trace.hops[2].ttl", &["256"]);

    let mut doc = fixture("full_stored.json");
    remove(&mut doc, "/device", "os");
    rejects(&doc, "device.os", &["missing field `os`"]);

    let mut doc = fixture("minimal.json");
    remove(&mut doc, "", "account");
    rejects(&doc, "account", &["missing field `account`"]);

    let mut doc = fixture("minimal.json");
    set(&mut doc, "/trace/protocol", json!("sctp"));
    rejects(&doc, "trace.protocol", &["sctp"]);

    let mut doc = fixture("minimal.json");
    set(&mut doc, "/trace/engine", json!("nmap"));
    rejects(
        &doc,
        "trace.engine",
        &["`nmap` is not an engine", "system:<command>"],
    );
    set(
        &mut doc,
        "/trace/engine",
        json!("system:/usr/sbin/traceroute"),
    );
    rejects(&doc, "trace.engine", &["bare program name"]);
    set(&mut doc, "/trace/engine", json!("system:"));
    rejects(&doc, "trace.engine", &["1 to 32"]);

    let mut doc = fixture("minimal.json");
    set(&mut doc, "/created_at", json!("yesterday"));
    rejects(&doc, "created_at", &[]);
}

#[test]
fn broken_json_is_a_json_error_and_non_objects_name_the_document() {
    assert!(matches!(
        Report::from_json(b"{\"schema\": 1,"),
        Err(Error::Json(_))
    ));
    let mut good = fixture_text("minimal.json").into_bytes();
    good.extend_from_slice(b" {}");
    assert!(matches!(Report::from_json(&good), Err(Error::Json(_))));
    for not_object in [&b"[1, 2]"[..], b" \"report\"", b"42", b"null", b"true"] {
        let found = violations_of(Report::from_json(not_object));
        assert_eq!(found[0].field, "(document)");
        assert!(
            found[0].reason.contains("a report is a JSON object"),
            "{}",
            found[0].reason
        );
    }
    assert!(matches!(Report::from_json(b""), Err(Error::Json(_))));
}

#[test]
fn text_that_is_not_utf8_is_a_json_error_at_the_byte() {
    // Decoding checks the document as UTF-8 in one pass before decoding it
    // as text; bytes that fail that check still get the slow decode, whose
    // error says where the bad byte is.
    let good = fixture_text("minimal.json");
    assert!(Report::from_submitted_json(good.as_bytes()).is_ok());
    let mut doc = fixture("minimal.json");
    set(&mut doc, "/device/os", json!("OS_MARK"));
    let text = serde_json::to_string(&doc).expect("serializes");
    let mut broken = text.into_bytes();
    let at = broken
        .windows(7)
        .position(|w| w == b"OS_MARK")
        .expect("marker");
    broken[at + 2] = 0xff;
    match Report::from_submitted_json(&broken) {
        Err(Error::Json(e)) => {
            let said = e.to_string();
            assert!(said.contains("invalid unicode code point"), "{said}");
            assert!(said.contains(&format!("column {}", at + 3)), "{said}");
        }
        other => panic!("expected a JSON error at the bad byte, got {other:?}"),
    }
}

#[test]
fn oversized_documents_are_refused_before_parsing() {
    let big = vec![b' '; ReportLimits::MAX_REPORT_BYTES + 1];
    let found = violations_of(Report::from_json(&big));
    assert_eq!(found[0].field, "(document)");
    assert!(
        found[0].reason.contains("at most 1048576 bytes"),
        "{}",
        found[0].reason
    );
}

// --- hop limits and rules ---------------------------------------------------

fn hop(ttl: u8) -> Value {
    json!({ "ttl": ttl, "addrs": ["203.0.113.1"], "rtt_ms": [1.0], "sent": 1, "received": 1 })
}

#[test]
fn at_most_64_hops() {
    let mut doc = fixture("minimal.json");
    let hops: Vec<Value> = (1..=65).map(hop).collect();
    put(&mut doc, "/trace", "hops", Value::Array(hops));
    rejects(&doc, "trace.hops", &["has 65 hops", "at most 64"]);
    let hops: Vec<Value> = (1..=64).map(hop).collect();
    put(&mut doc, "/trace", "hops", Value::Array(hops));
    Report::from_json(&bytes(&doc)).expect("64 hops are fine");
}

#[test]
fn per_hop_list_limits() {
    let cases: [(&str, Value, &str); 4] = [
        (
            "addrs",
            json!(
                (1..=9)
                    .map(|i| format!("203.0.113.{i}"))
                    .collect::<Vec<_>>()
            ),
            "has 9 addresses; at most 8",
        ),
        (
            "names",
            json!(
                (1..=9)
                    .map(|i| format!("r{i}.example.net"))
                    .collect::<Vec<_>>()
            ),
            "has 9 names; at most 8",
        ),
        (
            "rtt_ms",
            json!(vec![1.5; 17]),
            "has 17 round-trip times; at most 16",
        ),
        (
            "annotations",
            json!(vec!["!H"; 9]),
            "has 9 annotations; at most 8",
        ),
    ];
    for (key, value, reason) in cases {
        let mut doc = fixture("full_stored.json");
        set(&mut doc, &format!("/trace/hops/3/{key}"), value);
        rejects(&doc, &format!("trace.hops[3].{key}"), &[reason]);
    }
}

#[test]
fn ttls_start_at_one_and_strictly_increase() {
    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/trace/hops/0/ttl", json!(0));
    rejects(&doc, "trace.hops[0].ttl", &["is 0", "start at 1"]);

    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/trace/hops/3/ttl", json!(3));
    rejects(
        &doc,
        "trace.hops[3].ttl",
        &["is 3 after 3", "strictly increase"],
    );

    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/trace/hops/4/ttl", json!(2));
    rejects(&doc, "trace.hops[4].ttl", &["is 2 after 4"]);

    // Gaps are fine (tracepath -f, silent hops left out); 255 is the top.
    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/trace/hops/4/ttl", json!(255));
    set(&mut doc, "/trace/hops/0/ttl", json!(1));
    Report::from_stored_json(&bytes(&doc)).expect("gaps are allowed");
}

#[test]
fn received_cannot_exceed_sent() {
    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/trace/hops/1/received", json!(4));
    rejects(&doc, "trace.hops[1].received", &["is 4 but sent is 3"]);
    // `sent: 0` means the tool did not say.
    set(&mut doc, "/trace/hops/1/sent", json!(0));
    Report::from_stored_json(&bytes(&doc)).expect("unknown sent");
}

#[test]
fn rtts_are_finite_and_bounded() {
    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/trace/hops/0/rtt_ms/1", json!(-0.1));
    rejects(
        &doc,
        "trace.hops[0].rtt_ms[1]",
        &["is -0.1", "from 0 to 60000"],
    );
    set(&mut doc, "/trace/hops/0/rtt_ms/1", json!(60000.5));
    rejects(&doc, "trace.hops[0].rtt_ms[1]", &["is 60000.5"]);
    set(&mut doc, "/trace/hops/0/rtt_ms/1", json!(60000.0));
    Report::from_stored_json(&bytes(&doc)).expect("60 s is the limit");

    // JSON cannot carry NaN, but a probe building a report in code can.
    let mut report = full();
    report.trace.hops[0].rtt_ms[2] = f64::NAN;
    violates(&report, "trace.hops[0].rtt_ms[2]", &["is NaN", "finite"]);
    report.trace.hops[0].rtt_ms[2] = f64::INFINITY;
    violates(&report, "trace.hops[0].rtt_ms[2]", &["is inf"]);
}

#[test]
fn hop_addresses_are_distinct_and_names_are_host_names() {
    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/trace/hops/3/addrs/1", json!("203.0.113.9"));
    rejects(&doc, "trace.hops[3].addrs[1]", &["repeats 203.0.113.9"]);

    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/trace/hops/3/names/0", json!("x".repeat(254)));
    rejects(
        &doc,
        "trace.hops[3].names[0]",
        &["254 characters", "at most 253"],
    );
    set(&mut doc, "/trace/hops/3/names/0", json!("core router"));
    rejects(&doc, "trace.hops[3].names[0]", &["U+0020", "whitespace"]);
    set(&mut doc, "/trace/hops/3/names/0", json!(""));
    rejects(&doc, "trace.hops[3].names[0]", &["empty"]);
}

#[test]
fn a_hop_built_in_code_is_checked_too() {
    let mut report = full();
    let mut extra = Hop::new(6);
    extra.received = 2;
    extra.sent = 1;
    report.trace.hops.push(extra);
    violates(&report, "trace.hops[5].received", &["is 2 but sent is 1"]);
}

// --- text limits ------------------------------------------------------------

#[test]
fn string_lengths_are_bounded() {
    let cases: [(&str, usize, &str); 8] = [
        ("/account", ReportLimits::MAX_ACCOUNT_LEN, "account"),
        (
            "/declared/address",
            ReportLimits::MAX_ADDRESS_LEN,
            "declared.address",
        ),
        (
            "/declared/city",
            ReportLimits::MAX_CITY_LEN,
            "declared.city",
        ),
        ("/device/os", ReportLimits::MAX_SHORT_TEXT_LEN, "device.os"),
        (
            "/device/proxy/details",
            ReportLimits::MAX_DETAIL_LEN,
            "device.proxy.details",
        ),
        (
            "/trace/target",
            ReportLimits::MAX_HOSTNAME_LEN,
            "trace.target",
        ),
        (
            "/envelope/headers/user-agent",
            ReportLimits::MAX_HEADER_VALUE_LEN,
            "envelope.headers.user-agent",
        ),
        (
            "/endpoint_attempts/0/detail",
            ReportLimits::MAX_DETAIL_LEN,
            "endpoint_attempts[0].detail",
        ),
    ];
    for (pointer, max, field) in cases {
        let mut doc = fixture("full_stored.json");
        // Chinese characters: the limit counts characters, not bytes.
        set(&mut doc, pointer, json!("深".repeat(max)));
        let at_limit = Report::from_stored_json(&bytes(&doc));
        // Host names and other tokens are ASCII-agnostic; only the length matters here.
        assert!(
            at_limit.is_ok(),
            "{field} at its limit: {:?}",
            at_limit.err().map(|e| e.to_string())
        );
        set(&mut doc, pointer, json!("深".repeat(max + 1)));
        rejects(
            &doc,
            field,
            &[&format!("is {} characters long; at most {max}", max + 1)],
        );
    }
}

/// The account is the line's identity: a zero-width or direction-changing
/// character would make a second line that looks the same everywhere.
#[test]
fn an_account_with_an_invisible_character_is_refused() {
    for hidden in ['\u{200B}', '\u{202E}', '\u{FEFF}', '\u{2066}'] {
        let mut doc = fixture("full_stored.json");
        set(&mut doc, "/account", json!(format!("0755{hidden}123")));
        rejects(
            &doc,
            "account",
            &[
                &format!("U+{:04X}", u32::from(hidden)),
                "retype the account",
            ],
        );
    }
    // The same rules, for a probe's settings before any report carries them.
    assert_eq!(account_problem("0755123"), None);
    assert!(account_problem("0755\u{200B}123").is_some_and(|r| r.contains("U+200B")));
    assert!(account_problem(&"1".repeat(65)).is_some_and(|r| r.contains("at most 64")));
    assert_eq!(single_line_problem("3 巷 7 号", 256), None);
    assert!(single_line_problem("a\nb", 256).is_some_and(|r| r.contains("single line")));
    assert!(is_invisible_format('\u{200D}'));
    assert!(!is_invisible_format('中'));
    assert!(!is_invisible_format(' '));
}

#[test]
fn single_line_fields_reject_control_characters() {
    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/account", json!("0755\n001"));
    rejects(&doc, "account", &["U+000A at character 5", "single line"]);
    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/envelope/headers/via", json!("1.1 a\u{1b}[31m"));
    rejects(&doc, "envelope.headers.via", &["U+001B"]);
    // Details may span lines.
    let mut doc = fixture("full_stored.json");
    set(
        &mut doc,
        "/endpoint_attempts/0/detail",
        json!("tls error:\n  bad certificate"),
    );
    Report::from_stored_json(&bytes(&doc)).expect("multi-line detail");
    set(&mut doc, "/endpoint_attempts/0/detail", json!("bell\u{7}"));
    rejects(
        &doc,
        "endpoint_attempts[0].detail",
        &["only newlines and tabs"],
    );
}

#[test]
fn raw_text_is_bounded_and_only_for_system_engines() {
    let mut doc = fixture("system_engine.json");
    let max = ReportLimits::MAX_RAW_TEXT_BYTES;
    set(&mut doc, "/trace/raw_text", json!("a".repeat(max)));
    Report::from_submitted_json(&bytes(&doc)).expect("64 KiB is the limit");
    set(&mut doc, "/trace/raw_text", json!("a".repeat(max + 1)));
    rejects(
        &doc,
        "trace.raw_text",
        &["is 65537 bytes", "at most 65536 bytes"],
    );
    set(&mut doc, "/trace/raw_text", json!("1  <1 ms\u{0}"));
    rejects(&doc, "trace.raw_text", &["NUL"]);

    let mut doc = fixture("system_engine.json");
    remove(&mut doc, "/trace", "raw_text");
    let found = violations_of(Report::from_json(&bytes(&doc)));
    let fields: Vec<&str> = found.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["trace.raw_text", "trace.raw_format"], "{found:#?}");
    assert!(
        found[0]
            .reason
            .contains("`system:tracert` engine must send"),
        "{}",
        found[0].reason
    );

    let mut doc = fixture("minimal.json");
    put(&mut doc, "/trace", "raw_text", json!("traceroute to …"));
    rejects(&doc, "trace.raw_text", &["engine is `unprivileged`"]);
}

#[test]
fn list_limits_outside_hops() {
    let mut doc = fixture("full_stored.json");
    let addrs: Vec<String> = (0..33).map(|i| format!("2001:db8::{i:x}")).collect();
    set(&mut doc, "/device/local_addrs", json!(addrs));
    rejects(
        &doc,
        "device.local_addrs",
        &["has 33 addresses; at most 32"],
    );

    let mut doc = fixture("full_stored.json");
    let attempt = doc
        .pointer("/endpoint_attempts/0")
        .cloned()
        .expect("attempt");
    set(
        &mut doc,
        "/endpoint_attempts",
        Value::Array(vec![attempt; 33]),
    );
    rejects(&doc, "endpoint_attempts", &["has 33 entries; at most 32"]);

    let mut doc = fixture("system_engine.json");
    let fallback = json!({ "engine": "unprivileged", "reason": "not available" });
    set(
        &mut doc,
        "/trace/engine_fallbacks",
        Value::Array(vec![fallback; 9]),
    );
    rejects(
        &doc,
        "trace.engine_fallbacks",
        &["has 9 entries; at most 8"],
    );
}

// --- other rules ------------------------------------------------------------

#[test]
fn declared_fields_have_their_formats() {
    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/declared/province", json!("Guangdong"));
    rejects(
        &doc,
        "declared.province",
        &["`Guangdong` is not an ISO 3166-2:CN code"],
    );
    set(&mut doc, "/declared/province", json!("cn-gd"));
    rejects(&doc, "declared.province", &["CN-"]);

    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/declared/city", json!("4403"));
    rejects(&doc, "declared.city", &["has 4 digits", "6"]);
    set(&mut doc, "/declared/city", json!(""));
    rejects(&doc, "declared.city", &["empty"]);

    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/declared/carrier", json!("China Mobile"));
    rejects(&doc, "declared.carrier", &["whitespace"]);
    set(&mut doc, "/declared/carrier", json!("ChinaMobile"));
    rejects(&doc, "declared.carrier", &["snake_case"]);
    set(&mut doc, "/declared/carrier", json!("china__mobile"));
    rejects(&doc, "declared.carrier", &["snake_case"]);

    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/declared/location/lat", json!(91.0));
    rejects(&doc, "declared.location.lat", &["is 91", "from -90 to 90"]);
    set(&mut doc, "/declared/location/lat", json!(0.0));
    set(&mut doc, "/declared/location/lon", json!(-180.5));
    rejects(
        &doc,
        "declared.location.lon",
        &["is -180.5", "from -180 to 180"],
    );
    set(&mut doc, "/declared/location/lon", json!(0.0));
    set(&mut doc, "/declared/location/accuracy_m", json!(-1.0));
    rejects(&doc, "declared.location.accuracy_m", &["metres"]);
    set(&mut doc, "/declared/location/accuracy_m", json!(0.0));
    set(&mut doc, "/declared/location/source", json!("ip"));
    rejects(&doc, "declared.location.source", &["ip"]);
}

#[test]
fn mac_needs_consent_and_a_valid_format() {
    let mut doc = fixture("full_stored.json");
    remove(&mut doc, "", "consent");
    rejects(&doc, "device.mac", &["without `consent`"]);

    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/device/mac", json!("3c:7c:3f:12:ab"));
    rejects(&doc, "device.mac", &["not a MAC address"]);
    set(&mut doc, "/device/mac", json!("00:00:00:00:00:00"));
    rejects(&doc, "device.mac", &["not an interface address"]);
    set(&mut doc, "/device/mac", json!("3C-7C-3F-12-AB-9E"));
    let report = Report::from_stored_json(&bytes(&doc)).expect("Windows spelling");
    let encoded = String::from_utf8(report.to_json().expect("encodes")).expect("utf-8");
    assert!(
        encoded.contains("\"mac\":\"3c:7c:3f:12:ab:9e\""),
        "{encoded}"
    );

    assert!(MacAddress::parse("3c:7c-3f:12:ab:9e").is_err());
    assert_eq!(
        MacAddress::parse("02:00:5E:10:00:01")
            .expect("parses")
            .octets(),
        [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]
    );
}

#[test]
fn trace_consistency_rules() {
    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/trace/protocol", json!("udp"));
    rejects(
        &doc,
        "trace.protocol",
        &["windows-icmp engine only sends ICMP"],
    );

    let mut doc = fixture("full_stored.json");
    set(
        &mut doc,
        "/trace/engine_fallbacks/0/engine",
        json!("windows-icmp"),
    );
    rejects(
        &doc,
        "trace.engine_fallbacks[0].engine",
        &["the engine that ran the trace"],
    );

    let mut doc = fixture("minimal.json");
    put(&mut doc, "/trace", "target_addr", json!("198.51.100.11"));
    rejects(
        &doc,
        "trace.target_addr",
        &["198.51.100.11", "198.51.100.10", "must match"],
    );

    let mut doc = fixture("minimal.json");
    set(&mut doc, "/trace/duration_ms", json!(3_600_001));
    rejects(&doc, "trace.duration_ms", &["3600001", "at most 3600000"]);

    let mut doc = fixture("minimal.json");
    put(&mut doc, "/trace", "raw_format", json!("traceroute"));
    rejects(&doc, "trace.raw_format", &["without `raw_text`"]);
}

#[test]
fn endpoint_attempt_rules() {
    let mut doc = fixture("full_stored.json");
    remove(&mut doc, "/endpoint_attempts/1", "http_status");
    rejects(&doc, "endpoint_attempts[1].http_status", &["is missing"]);

    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/endpoint_attempts/1/http_status", json!(99));
    rejects(
        &doc,
        "endpoint_attempts[1].http_status",
        &["is 99", "100 to 599"],
    );

    let mut doc = fixture("full_stored.json");
    put(&mut doc, "/endpoint_attempts/0", "http_status", json!(200));
    rejects(
        &doc,
        "endpoint_attempts[0].http_status",
        &["outcome is `tls`"],
    );

    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/endpoint_attempts/1/outcome", json!("ok"));
    rejects(
        &doc,
        "endpoint_attempts[1].http_status",
        &["is 503 but outcome is `ok`"],
    );
    set(&mut doc, "/endpoint_attempts/1/http_status", json!(202));
    Report::from_stored_json(&bytes(&doc)).expect("ok with 202");

    let mut doc = fixture("full_stored.json");
    set(
        &mut doc,
        "/endpoint_attempts/0/endpoint",
        json!("ftp://r1.example.net/"),
    );
    rejects(
        &doc,
        "endpoint_attempts[0].endpoint",
        &["not an http(s) URL"],
    );
    set(&mut doc, "/endpoint_attempts/0/outcome", json!("refused"));
    rejects(&doc, "endpoint_attempts[0].outcome", &["refused"]);
}

#[test]
fn every_violation_is_reported_at_once() {
    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/declared/province", json!("GD"));
    set(&mut doc, "/trace/hops/0/ttl", json!(0));
    set(&mut doc, "/envelope/peer_port", json!(0));
    let found = violations_of(Report::from_json(&bytes(&doc)));
    let fields: Vec<&str> = found.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "declared.province",
            "trace.hops[0].ttl",
            "envelope.peer_port"
        ]
    );
    let message = Report::from_json(&bytes(&doc))
        .expect_err("invalid")
        .to_string();
    assert!(
        message.starts_with("invalid report: declared.province: "),
        "{message}"
    );
}

#[test]
fn a_flood_of_violations_is_summarised() {
    let mut doc = fixture("minimal.json");
    let hops: Vec<Value> = (0..1000).map(|_| json!({ "ttl": 0 })).collect();
    put(&mut doc, "/trace", "hops", Value::Array(hops));
    let found = violations_of(Report::from_json(&bytes(&doc)));
    assert_eq!(found.len(), 101);
    let last = found.last().expect("summary");
    assert_eq!(last.field, "(document)");
    // 1 hop-count violation + 1000 TTL violations, 100 listed.
    assert!(
        last.reason.starts_with("901 more violations"),
        "{}",
        last.reason
    );
}

// --- envelope ---------------------------------------------------------------

#[test]
fn probes_must_not_send_an_envelope() {
    let doc = fixture("full_stored.json");
    let found = violations_of(Report::from_submitted_json(&bytes(&doc)));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].field, "envelope");
    assert!(found[0].reason.contains("must not send it"));
    let report = Report::from_json(&bytes(&doc)).expect("either stage");
    assert!(report.validate_submitted().is_err());
    report.validate_stored().expect("stored");
}

#[test]
fn stored_reports_need_an_envelope() {
    let doc = fixture("minimal.json");
    let found = violations_of(Report::from_stored_json(&bytes(&doc)));
    assert_eq!(found[0].field, "envelope");
    assert!(found[0].reason.contains("is missing"));
    let report = Report::from_json(&bytes(&doc)).expect("either stage");
    report.validate_submitted().expect("submitted");
    assert!(report.validate_stored().is_err());
}

#[test]
fn envelope_fields_are_checked() {
    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/envelope/path", json!("v1/reports"));
    rejects(&doc, "envelope.path", &["does not start with `/`"]);

    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/envelope/node_id", json!("edge/1"));
    rejects(&doc, "envelope.node_id", &["not a node id"]);

    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/envelope/peer_ip", json!("0.0.0.0"));
    rejects(&doc, "envelope.peer_ip", &["0.0.0.0"]);

    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/envelope/tls/sni", json!("a b"));
    rejects(&doc, "envelope.tls.sni", &["whitespace"]);

    let mut doc = fixture("full_stored.json");
    set(&mut doc, "/envelope/seq", json!(-1));
    rejects(&doc, "envelope.seq", &["invalid value"]);

    // The verifying key's id: a key id, and only on a signed report.
    let trust = |signature: &str, key_id: &str| {
        json!({"score": 100, "install": 100, "prefix": 100,
               "signature": signature, "key_id": key_id})
    };
    let mut doc = fixture("full_stored.json");
    put(
        &mut doc,
        "/envelope",
        "trust",
        trust("verified", "65b60673d6ed884b"),
    );
    let report = Report::from_stored_json(&bytes(&doc)).expect("a key id");
    let key_id = report.envelope.and_then(|e| e.trust).and_then(|t| t.key_id);
    assert_eq!(key_id.as_deref(), Some("65b60673d6ed884b"));
    let mut doc = fixture("full_stored.json");
    put(
        &mut doc,
        "/envelope",
        "trust",
        trust("key_changed", "65B60673D6ED884B"),
    );
    rejects(&doc, "envelope.trust.key_id", &["not a key id"]);
    let mut doc = fixture("full_stored.json");
    put(
        &mut doc,
        "/envelope",
        "trust",
        trust("unsigned", "65b60673d6ed884b"),
    );
    rejects(&doc, "envelope.trust.key_id", &["unsigned"]);

    // Headers may be left out entirely.
    let mut doc = fixture("full_stored.json");
    remove(&mut doc, "/envelope", "headers");
    remove(&mut doc, "/envelope", "tls");
    Report::from_stored_json(&bytes(&doc)).expect("bare envelope");
}

/// The receiver checks the envelope it adds alone: for a report that passed
/// as submitted, that says exactly what checking the whole stored report
/// says.
#[test]
fn the_envelope_alone_is_checked_as_the_stored_report_would_be() {
    let stored = fixture("full_stored.json");
    let cases: Vec<(&str, Value)> = vec![
        ("/envelope/path", json!("/ok/path")),
        ("/envelope/path", json!("v1/reports")),
        ("/envelope/node_id", json!("edge/1")),
        ("/envelope/peer_ip", json!("0.0.0.0")),
        ("/envelope/peer_port", json!(0)),
        ("/envelope/tls/sni", json!("a b")),
    ];
    for (pointer, value) in cases {
        let mut doc = stored.clone();
        set(&mut doc, pointer, value.clone());
        // Decoded without checking: the envelope may be invalid.
        let report: Report = serde_json::from_value(doc).expect("decodes");
        let envelope = report.envelope.clone().expect("envelope");
        let mut submitted = report.clone();
        submitted.envelope = None;
        submitted
            .validate_submitted()
            .expect("the probe's part is valid");
        let found = |result: Result<(), Error>| match result {
            Ok(()) => Vec::new(),
            Err(Error::InvalidReport(v)) => v.0,
            Err(other) => panic!("expected InvalidReport, got {other}"),
        };
        let whole = found(report.validate_stored());
        let alone = found(Report::validate_envelope(&envelope));
        assert_eq!(alone, whole, "{pointer} = {value}");
        assert_eq!(
            whole.is_empty(),
            pointer == "/envelope/path" && value == "/ok/path"
        );
    }
}

#[test]
fn envelope_headers_keep_only_selected_names() {
    let mut headers = EnvelopeHeaders::default();
    assert!(headers.insert("User-Agent", "probe/1"));
    assert!(!headers.insert("Cookie", "secret"));
    assert!(headers.insert("X-Forwarded-For", "203.0.113.1"));
    assert!(headers.insert("x-forwarded-for", "192.0.2.9\r\n"));
    assert_eq!(
        headers.get("x-forwarded-for"),
        Some("203.0.113.1, 192.0.2.9  ")
    );
    assert!(headers.insert("via", &"v".repeat(2000)));
    assert_eq!(
        headers.get("VIA").map(|v| v.chars().count()),
        Some(ReportLimits::MAX_HEADER_VALUE_LEN)
    );
    let names: Vec<&str> = headers.iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["user-agent", "via", "x-forwarded-for"]);

    // Whatever insert records validates.
    let mut report = full();
    report.envelope.as_mut().expect("envelope").headers = headers;
    report.validate_stored().expect("inserted headers validate");
}

// --- never panics -------------------------------------------------------------

mod never_panics {
    use lineprobe_shared::Report;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = Report::from_json(&bytes);
        }

        #[test]
        fn on_a_damaged_report(at in 0usize..4000, cut in 0usize..64, junk in ".{0,16}") {
            let text = super::fixture_text("full_stored.json");
            let at = text.char_indices().map(|(i, _)| i).nth(at % text.chars().count()).unwrap_or(0);
            let end = text[at..].char_indices().map(|(i, _)| at + i).nth(cut).unwrap_or(text.len());
            let damaged = format!("{}{junk}{}", &text[..at], &text[end..]);
            if let Ok(report) = Report::from_json(damaged.as_bytes()) {
                // Whatever is accepted encodes and decodes to itself.
                let again = Report::from_json(&report.to_json().expect("encodes")).expect("re-decodes");
                prop_assert_eq!(again, report);
            }
        }
    }
}

#[test]
fn a_malformed_timestamp_says_what_a_timestamp_looks_like() {
    // chrono alone says "premature end of input" for a missing offset and
    // "input is out of range" for month 13: the field, not the fix.
    for (pointer, field, text) in [
        ("/created_at", "created_at", "2025-06-03T21:14:09"),
        (
            "/trace/started_at",
            "trace.started_at",
            "2025-13-03T21:14:09Z",
        ),
        (
            "/envelope/received_at",
            "envelope.received_at",
            "03/06/2025 13:14",
        ),
        (
            "/endpoint_attempts/0/at",
            "endpoint_attempts[0].at",
            "2025-06-03T21:14",
        ),
    ] {
        let mut doc = fixture("full_stored.json");
        set(&mut doc, pointer, json!(text));
        rejects(
            &doc,
            field,
            &[
                "is not an RFC 3339 date and time",
                "`2025-06-03T21:14:09+08:00`",
            ],
        );
    }
    // A missing timestamp keeps serde's own words.
    let mut doc = fixture("full_stored.json");
    remove(&mut doc, "", "created_at");
    rejects(&doc, "created_at", &["missing field"]);
}
