//! The report ingest parser against hostile bodies: whatever arrives, it
//! answers with a report that keeps every rule or with a typed error the
//! collector can turn into a clean response — violations that name their
//! field (422), or a JSON syntax error for bytes that are not JSON (400) —
//! and never panics.
//!
//! Bodies are made by damaging valid reports the way a broken or malicious
//! probe would: a value of the wrong type, a key removed or added, a list
//! stretched, text cut or spliced. Where serde itself refuses the document,
//! the violation must point at exactly the place that was damaged.
//!
//! The valid reports are the fuzzer's seeds (`fuzz/seeds/report_ingest`),
//! so this suite also keeps the seeds valid as the schema evolves.

use std::path::PathBuf;

use lineprobe_shared::{Error, Report, ReportLimits, Violation};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Listed violations plus the line that summarises the rest.
const MAX_VIOLATIONS: usize = 101;

fn seed_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/report_ingest")
}

fn seed(name: &str) -> Vec<u8> {
    let path = seed_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The valid seeds: two as a probe sends them, one as the receiver stores it.
const VALID_SEEDS: [&str; 3] = ["valid-small.json", "valid-rich.json", "valid-stored.json"];

fn seed_value(index: usize) -> Value {
    let name = VALID_SEEDS[index % VALID_SEEDS.len()];
    serde_json::from_slice(&seed(name)).expect("seed is JSON")
}

#[derive(Clone, Copy, Debug)]
enum Stage {
    Any,
    Submitted,
    Stored,
}

fn decode(bytes: &[u8], stage: Stage) -> Result<Report, Error> {
    match stage {
        Stage::Any => Report::from_json(bytes),
        Stage::Submitted => Report::from_submitted_json(bytes),
        Stage::Stored => Report::from_stored_json(bytes),
    }
}

/// A field path as the parser writes it: `(document)`, or names, `[index]`
/// and quoted keys `["…"]`, with dots between names.
fn well_formed_path(field: &str) -> bool {
    if field == "(document)" {
        return true;
    }
    let mut rest = field;
    let mut first = true;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("[\"") {
            // A quoted key: escapes `\"`, `\\` and `\uXXXX`, then `"]` or `"…]`.
            let mut chars = after.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c if c.is_control() => return false,
                    _ => {}
                }
            }
            let Some(end) = end else { return false };
            let tail = &after[end + 1..];
            let Some(tail) = tail.strip_prefix("…]").or_else(|| tail.strip_prefix(']')) else {
                return false;
            };
            rest = tail;
        } else if let Some(after) = rest.strip_prefix('[') {
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || !after[digits..].starts_with(']') {
                return false;
            }
            rest = &after[digits + 1..];
        } else {
            let body = if first {
                rest
            } else if let Some(body) = rest.strip_prefix('.') {
                body
            } else {
                return false;
            };
            let len = body
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
                .count();
            if len == 0 {
                return false;
            }
            rest = &body[len..];
        }
        first = false;
    }
    true
}

/// The contract: a valid report, violations with field paths, or a JSON
/// error only for bytes that are not JSON. Returns the violations.
fn check_answer(bytes: &[u8], stage: Stage) -> Result<Option<Vec<Violation>>, TestCaseError> {
    match decode(bytes, stage) {
        Ok(report) => {
            prop_assert!(
                report.violations().is_empty(),
                "accepted but breaks its rules: {}",
                report.violations()
            );
            match stage {
                Stage::Submitted => prop_assert!(report.envelope.is_none()),
                Stage::Stored => prop_assert!(report.envelope.is_some()),
                Stage::Any => {}
            }
            let encoded = report.to_json().expect("an accepted report encodes");
            let again = decode(&encoded, stage).expect("an accepted report re-decodes");
            prop_assert_eq!(again, report);
            Ok(None)
        }
        Err(Error::InvalidReport(violations)) => {
            let message = violations.to_string();
            let found = violations.0;
            prop_assert!(!found.is_empty(), "rejected with no violation listed");
            prop_assert!(found.len() <= MAX_VIOLATIONS, "{} violations", found.len());
            for v in &found {
                prop_assert!(well_formed_path(&v.field), "bad field path in {:?}", v);
                prop_assert!(!v.reason.trim().is_empty(), "no reason in {:?}", v);
            }
            // The answer goes back to the probe: it may quote the body, but
            // stays within a small multiple of it.
            prop_assert!(
                message.len() <= 64 * 1024 + 2 * bytes.len(),
                "a {}-byte error for a {}-byte body",
                message.len(),
                bytes.len()
            );
            Ok(Some(found))
        }
        Err(Error::Json(e)) => {
            prop_assert!(
                serde_json::from_slice::<Value>(bytes).is_err(),
                "valid JSON answered with a bare JSON error instead of violations: {}",
                e
            );
            Ok(None)
        }
        Err(other) => Err(TestCaseError::fail(format!(
            "unexpected error kind: {other:?}"
        ))),
    }
}

// --- building damaged reports -------------------------------------------------

/// Values a broken or hostile probe puts where something else belongs.
fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::num::f64::NORMAL.prop_map(Value::from),
        prop::sample::select(vec![
            json!(0),
            json!(-1),
            json!(255),
            json!(256),
            json!(65_536),
            json!(u64::MAX),
            json!(0.5),
            json!(1e308),
            json!(-0.0),
            json!(""),
            json!(" "),
            json!("CN-GD"),
            json!("cn-gd"),
            json!("440300"),
            json!("china_mobile"),
            json!("system:"),
            json!("system:tracert"),
            json!("system:/bin/sh"),
            json!("windows-icmp"),
            json!("0190f3c2-5a10-7b44-9c01-3e2d1f0a9b77"),
            json!("6f1c1a56-7a3e-4c2b-9d1e-2b3c4d5e6f70"),
            json!("2026-02-30T00:00:00Z"),
            json!("2026-03-14T01:02:03+25:00"),
            json!("2026-03-14"),
            json!("::ffff:192.0.2.1"),
            json!("192.0.2.256"),
            json!("02:1a:2b:3c:4d"),
            json!("a\u{0}b"),
            json!("line\nbreak"),
            json!("\u{202e}rtl"),
            json!("x".repeat(300)),
            json!("字".repeat(70)),
        ]),
        "\\PC{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,12}", inner), 0..4)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// One way to damage a document, applied at a place chosen by `walk`.
#[derive(Clone, Debug)]
enum Damage {
    /// Put another value where one was.
    Replace(Value),
    /// Remove the key (or list element).
    Remove,
    /// Add a key to the object.
    AddKey(String, Value),
    /// Repeat the last element of a list, many times.
    Stretch(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        3 => hostile_value().prop_map(Damage::Replace),
        2 => Just(Damage::Remove),
        1 => ("\\PC{0,12}", hostile_value()).prop_map(|(k, v)| Damage::AddKey(k, v)),
        1 => (1usize..80).prop_map(Damage::Stretch),
    ]
}

/// Where damage lands: a field path as the parser writes it, and the JSON
/// pointer steps to reach it.
#[derive(Clone, Debug, Default)]
struct Place {
    field: String,
    steps: Vec<Step>,
}

#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

/// Walks down from the root, at each level taking the child that the next
/// choice picks, until the choices or the containers run out.
fn place(doc: &Value, walk: &[usize]) -> Place {
    let mut at = Place::default();
    let mut node = doc;
    for &choice in walk {
        match node {
            Value::Object(map) if !map.is_empty() => {
                let (key, child) = map.iter().nth(choice % map.len()).expect("in range");
                if !at.field.is_empty() {
                    at.field.push('.');
                }
                at.field.push_str(key);
                at.steps.push(Step::Key(key.clone()));
                node = child;
            }
            Value::Array(items) if !items.is_empty() => {
                let i = choice % items.len();
                at.field = format!("{}[{i}]", at.field);
                at.steps.push(Step::Index(i));
                node = &items[i];
            }
            _ => break,
        }
    }
    at
}

fn node_mut<'a>(doc: &'a mut Value, steps: &[Step]) -> &'a mut Value {
    steps.iter().fold(doc, |node, step| match step {
        Step::Key(k) => &mut node[k.as_str()],
        Step::Index(i) => &mut node[*i],
    })
}

/// Applies `damage` at `at`; false when it does not apply there (adding a key
/// to something that is not an object, removing the root…).
fn apply(doc: &mut Value, at: &Place, damage: &Damage) -> bool {
    match damage {
        Damage::Replace(value) => {
            *node_mut(doc, &at.steps) = value.clone();
            true
        }
        Damage::Remove => {
            let Some((last, parent)) = at.steps.split_last() else {
                return false;
            };
            match (node_mut(doc, parent), last) {
                (Value::Object(map), Step::Key(k)) => map.remove(k).is_some(),
                (Value::Array(items), Step::Index(i)) => {
                    items.remove(*i);
                    true
                }
                _ => false,
            }
        }
        Damage::AddKey(key, value) => match node_mut(doc, &at.steps) {
            Value::Object(map) if !map.contains_key(key) => {
                map.insert(key.clone(), value.clone());
                true
            }
            _ => false,
        },
        Damage::Stretch(times) => match node_mut(doc, &at.steps) {
            Value::Array(items) if !items.is_empty() => {
                let last = items.last().cloned().expect("not empty");
                items.extend(std::iter::repeat_n(last, *times));
                true
            }
            _ => false,
        },
    }
}

fn walk() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(any::<usize>(), 1..7)
}

// --- the seeds ------------------------------------------------------------------

#[test]
fn the_fuzzers_valid_seeds_are_valid() {
    for name in ["valid-small.json", "valid-rich.json"] {
        Report::from_submitted_json(&seed(name))
            .unwrap_or_else(|e| panic!("{name} is not a valid submission: {e}"));
    }
    Report::from_stored_json(&seed("valid-stored.json"))
        .unwrap_or_else(|e| panic!("valid-stored.json is not a valid stored report: {e}"));
}

#[test]
fn the_fuzzers_broken_seeds_are_rejected_cleanly() {
    let dir = seed_dir();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("seed dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("valid-") {
            continue;
        }
        let bytes = std::fs::read(&path).expect("seed");
        let answer =
            check_answer(&bytes, Stage::Submitted).unwrap_or_else(|e| panic!("{name}: {e}"));
        let rejected = answer.is_some() || Report::from_submitted_json(&bytes).is_err();
        assert!(rejected, "{name} was accepted");
        checked += 1;
    }
    assert!(
        checked >= 3,
        "only {checked} broken seeds in {}",
        dir.display()
    );
}

// --- field paths of hostile keys ------------------------------------------------

fn fields_of(bytes: &[u8]) -> Vec<String> {
    match Report::from_json(bytes) {
        Err(Error::InvalidReport(v)) => v.0.into_iter().map(|v| v.field).collect(),
        other => panic!("expected violations, got {other:?}"),
    }
}

#[test]
fn unknown_keys_that_are_not_names_are_quoted_in_the_field_path() {
    let mut doc = seed_value(0);
    doc["device"]["a.b"] = json!(1);
    assert_eq!(fields_of(doc.to_string().as_bytes()), [r#"device["a.b"]"#]);

    let mut doc = seed_value(0);
    doc[""] = json!(1);
    assert_eq!(fields_of(doc.to_string().as_bytes()), [r#"[""]"#]);

    let mut doc = seed_value(0);
    doc["trace"]["hops"][1]["x\u{7f}\"y\n"] = json!(1);
    assert_eq!(
        fields_of(doc.to_string().as_bytes()),
        [r#"trace.hops[1]["x\u007f\"y\u000a"]"#]
    );

    let mut doc = seed_value(0);
    doc["k".repeat(500)] = json!(1);
    let fields = fields_of(doc.to_string().as_bytes());
    assert_eq!(fields, [format!("[\"{}\"…]", "k".repeat(64))]);
}

/// A key given twice is reported at that key, like a missing one.
#[test]
fn a_repeated_key_is_reported_at_the_key() {
    let text = String::from_utf8(seed(VALID_SEEDS[0])).expect("UTF-8");
    let twice = text.replacen("\"os\":", "\"os\":\"linux\",\"os\":", 1);
    assert_ne!(twice, text);
    let found = match Report::from_json(twice.as_bytes()) {
        Err(Error::InvalidReport(v)) => v.0,
        other => panic!("expected violations, got {other:?}"),
    };
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].field, "device.os");
    assert!(
        found[0].reason.starts_with("duplicate field `os`"),
        "{found:?}"
    );
}

/// `serde_json` calls a value of the wrong type for a field that takes one of a
/// few names a syntax error ("expected value"); the body is JSON all the same
/// and the probe must be told which field to fix and what it takes.
#[test]
fn a_wrong_type_where_a_name_belongs_names_the_field_and_the_choices() {
    for (pointer, field, names) in [
        ("/trace/protocol", "trace.protocol", "`icmp`, `udp`, `tcp`"),
        (
            "/declared/location/source",
            "declared.location.source",
            "`gps` or `user`",
        ),
        (
            "/endpoint_attempts/1/outcome",
            "endpoint_attempts[1].outcome",
            "`dns`",
        ),
        ("/trace/raw_format", "trace.raw_format", "`windows-tracert`"),
    ] {
        for (value, kind) in [
            (json!(null), "null"),
            (json!(7), "a number"),
            (json!(["udp"]), "a list"),
            (json!({}), "an object"),
        ] {
            if pointer.ends_with("raw_format") && value.is_null() {
                continue; // optional: null is its absence
            }
            let mut doc = seed_value(1);
            *doc.pointer_mut(pointer).expect("in the seed") = value;
            let found = match Report::from_json(doc.to_string().as_bytes()) {
                Err(Error::InvalidReport(v)) => v.0,
                other => panic!("{pointer} = {kind}: expected violations, got {other:?}"),
            };
            assert_eq!(found.len(), 1, "{found:?}");
            assert_eq!(found[0].field, field);
            assert!(
                found[0]
                    .reason
                    .starts_with(&format!("is {kind}; expected "))
                    && found[0].reason.contains(names),
                "{pointer} = {kind}: {}",
                found[0].reason
            );
        }
    }
}

// --- properties -----------------------------------------------------------------

proptest! {
    // Damage that does not apply where it lands (a key added to a number)
    // is skipped, so rejects are many by design.
    #![proptest_config(ProptestConfig {
        cases: 400,
        max_global_rejects: 20_000,
        ..ProptestConfig::default()
    })]

    /// Any damage, any number of times, then any stage: the contract holds.
    #[test]
    fn damaged_reports_get_a_clean_answer(
        base in 0usize..3,
        damages in prop::collection::vec((walk(), damage()), 1..5),
        pretty in any::<bool>(),
    ) {
        let mut doc = seed_value(base);
        for (walk, damage) in &damages {
            let at = place(&doc, walk);
            apply(&mut doc, &at, damage);
        }
        let bytes = if pretty {
            serde_json::to_vec_pretty(&doc).expect("encodes")
        } else {
            serde_json::to_vec(&doc).expect("encodes")
        };
        for stage in [Stage::Any, Stage::Submitted, Stage::Stored] {
            check_answer(&bytes, stage)?;
        }
    }

    /// One damage that serde itself refuses is reported at exactly the place
    /// it was made: the probe author is sent to the right field.
    #[test]
    fn a_decoding_error_names_the_damaged_field(
        base in 0usize..3,
        walk in walk(),
        damage in damage(),
    ) {
        let mut doc = seed_value(base);
        let at = place(&doc, &walk);
        prop_assume!(!at.steps.is_empty());
        prop_assume!(apply(&mut doc, &at, &damage));
        let bytes = serde_json::to_vec(&doc).expect("encodes");
        // Only what serde refuses has a single place; a rule broken between
        // two fields (a MAC without consent) is reported where the rule is.
        prop_assume!(serde_json::from_slice::<Report>(&bytes).is_err());
        let found = check_answer(&bytes, Stage::Any)?
            .expect("serde refused it, so the parser must list violations");
        let expected = match &damage {
            Damage::AddKey(key, _) if !key.is_empty()
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                && key.len() <= 64 =>
            {
                let dot = if at.field.is_empty() { "" } else { "." };
                Some(format!("{}{dot}{key}", at.field))
            }
            // Quoted keys are covered by the test above.
            Damage::AddKey(..) => None,
            // A removed list element shifts the rest; a stretched list may be
            // too long for its field, reported at the list.
            Damage::Remove if matches!(at.steps.last(), Some(Step::Index(_))) => None,
            _ => Some(at.field.clone()),
        };
        if let Some(expected) = expected {
            // A wrong value can also be refused inside itself (an object
            // where a list of objects belongs): the path then goes deeper.
            prop_assert!(
                found.iter().any(|v| v.field == expected
                    || v.field.starts_with(&format!("{expected}."))
                    || v.field.starts_with(&format!("{expected}["))),
                "damage {:?} at {} reported at {:?}",
                damage,
                expected,
                found
            );
        }
    }

    /// Valid reports cut short, or with bytes spliced in, still get a clean
    /// answer: this is what a dropped connection or a broken proxy sends.
    #[test]
    fn cut_or_spliced_bodies_get_a_clean_answer(
        base in 0usize..3,
        at in any::<prop::sample::Index>(),
        cut in 0usize..64,
        junk in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let text = serde_json::to_vec(&seed_value(base)).expect("encodes");
        let start = at.index(text.len());
        let end = (start + cut).min(text.len());
        let mut damaged = text[..start].to_vec();
        damaged.extend_from_slice(&junk);
        damaged.extend_from_slice(&text[end..]);
        for stage in [Stage::Any, Stage::Submitted, Stage::Stored] {
            check_answer(&damaged, stage)?;
        }
    }

    /// Arbitrary bytes, including ones that start like JSON.
    #[test]
    fn arbitrary_bodies_get_a_clean_answer(
        prefix in prop::sample::select(vec!["", "{", "{\"schema\":1,", "[", "\u{feff}{", " \n"]),
        raw in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut body = prefix.as_bytes().to_vec();
        body.extend_from_slice(&raw);
        check_answer(&body, Stage::Submitted)?;
    }
}

/// Deep nesting is refused by serde's recursion limit with a clean error,
/// not a stack overflow.
#[test]
fn deeply_nested_bodies_get_a_clean_answer() {
    for depth in [64, 200, 10_000, 100_000] {
        // Under a known field, and under an unknown one (read past while
        // looking for `schema`).
        for (key, open, close) in [
            ("declared", "[", "]"),
            ("declared", "{\"a\":", "}"),
            ("zz", "[", "]"),
            ("zz", "{\"a\":", "}"),
        ] {
            let mut body = format!("{{\"schema\":1,\"{key}\":");
            body.push_str(&open.repeat(depth));
            body.push('1');
            body.push_str(&close.repeat(depth));
            body.push('}');
            let answer = check_answer(body.as_bytes(), Stage::Submitted);
            assert!(answer.is_ok(), "depth {depth}: {answer:?}");
        }
    }
}

/// A body at the size limit is parsed; one byte over is refused unread.
#[test]
fn the_size_limit_is_exact() {
    let mut doc = seed_value(0);
    doc["account"] = json!("");
    let base = serde_json::to_vec(&doc).expect("encodes");
    let pad = ReportLimits::MAX_REPORT_BYTES - base.len();
    // Whitespace is JSON: the padded report is the same report.
    let mut at_limit = base.clone();
    at_limit.extend(std::iter::repeat_n(b' ', pad));
    Report::from_submitted_json(&at_limit).expect("a report of exactly the limit is accepted");
    at_limit.push(b' ');
    let fields = fields_of(&at_limit);
    assert_eq!(fields, ["(document)"]);
}
