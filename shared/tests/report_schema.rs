//! The committed JSON Schema stays what the types generate, and describes
//! the example report.

use std::path::PathBuf;

use lineprobe_shared::{Report, report_json_schema};
use serde_json::Value;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema/report-v1.schema.json")
}

fn generated_text() -> String {
    let mut text = serde_json::to_string_pretty(&report_json_schema()).expect("schema serializes");
    text.push('\n');
    text
}

#[test]
fn committed_schema_matches_generated() {
    let path = committed_path();
    let generated = generated_text();
    if std::env::var_os("LINEPROBE_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("schema dir")).expect("create schema dir");
        std::fs::write(&path, &generated).expect("write schema");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} differs from the schema generated from the report types; if the type change is \
         intended, rerun with LINEPROBE_BLESS=1 to rewrite it and commit the result",
        path.display()
    );
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/report/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn example() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/report.example.json");
    let text = std::fs::read_to_string(path).expect("config/report.example.json");
    serde_json::from_str(&text).expect("example is JSON")
}

/// A small JSON Schema checker covering the keywords the generated schema
/// uses: `$ref`, `anyOf`, `oneOf`, `type`, `const`, `enum`, `required`,
/// `properties`, `additionalProperties`, `items`, `maxItems`, `minLength`,
/// `maxLength`, `pattern`, `minimum`, `maximum`. Returns one line per error.
struct Checker<'a> {
    root: &'a Value,
}

impl Checker<'_> {
    fn check(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let pointer = reference.strip_prefix('#').expect("local $ref");
            let target = self
                .root
                .pointer(pointer)
                .unwrap_or_else(|| panic!("dangling {reference}"));
            self.check(target, value, at, errors);
        }
        if let Some(options) = schema.get("anyOf").and_then(Value::as_array)
            && !options.iter().any(|s| self.passes(s, value, at))
        {
            errors.push(format!("{at}: matches no anyOf option"));
        }
        if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
            let matching = options.iter().filter(|s| self.passes(s, value, at)).count();
            if matching != 1 {
                errors.push(format!("{at}: matches {matching} oneOf options"));
            }
        }
        if let Some(types) = schema.get("type") {
            let types: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                other => panic!("odd type {other}"),
            };
            if !types.iter().any(|t| type_matches(t, value)) {
                errors.push(format!("{at}: {value} is not of type {types:?}"));
                return;
            }
        }
        if let Some(expected) = schema.get("const")
            && expected != value
        {
            errors.push(format!("{at}: {value} is not {expected}"));
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(value)
        {
            errors.push(format!("{at}: {value} is not one of {options:?}"));
        }
        match value {
            Value::Object(object) => self.check_object(schema, object, at, errors),
            Value::Array(items) => self.check_array(schema, items, at, errors),
            Value::String(s) => check_string(schema, s, at, errors),
            Value::Number(n) => check_number(schema, n, at, errors),
            Value::Null | Value::Bool(_) => {}
        }
    }

    fn check_object(
        &self,
        schema: &Value,
        object: &serde_json::Map<String, Value>,
        at: &str,
        errors: &mut Vec<String>,
    ) {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = name.as_str().expect("required names");
            if !object.contains_key(name) {
                errors.push(format!("{at}: missing required {name}"));
            }
        }
        for (key, item) in object {
            match properties.and_then(|p| p.get(key)) {
                Some(sub) => self.check(sub, item, &format!("{at}.{key}"), errors),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errors.push(format!("{at}: additional property {key}"));
                }
                None => {}
            }
        }
    }

    fn check_array(&self, schema: &Value, items: &[Value], at: &str, errors: &mut Vec<String>) {
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            errors.push(format!("{at}: {} items > {max}", items.len()));
        }
        if let Some(sub) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                self.check(sub, item, &format!("{at}[{i}]"), errors);
            }
        }
    }

    fn passes(&self, schema: &Value, value: &Value, at: &str) -> bool {
        let mut errors = Vec::new();
        self.check(schema, value, at, &mut errors);
        errors.is_empty()
    }

    fn errors(&self, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(self.root, value, "report", &mut errors);
        errors
    }
}

fn check_string(schema: &Value, s: &str, at: &str, errors: &mut Vec<String>) {
    let len = s.chars().count() as u64;
    if schema
        .get("maxLength")
        .and_then(Value::as_u64)
        .is_some_and(|m| len > m)
    {
        errors.push(format!("{at}: longer than maxLength"));
    }
    if schema
        .get("minLength")
        .and_then(Value::as_u64)
        .is_some_and(|m| len < m)
    {
        errors.push(format!("{at}: shorter than minLength"));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        let re = regex::Regex::new(pattern).expect("pattern compiles");
        if !re.is_match(s) {
            errors.push(format!("{at}: {s:?} does not match {pattern}"));
        }
    }
}

fn check_number(schema: &Value, n: &serde_json::Number, at: &str, errors: &mut Vec<String>) {
    let x = n.as_f64().expect("finite");
    if schema
        .get("minimum")
        .and_then(Value::as_f64)
        .is_some_and(|m| x < m)
    {
        errors.push(format!("{at}: {x} below minimum"));
    }
    if schema
        .get("maximum")
        .and_then(Value::as_f64)
        .is_some_and(|m| x > m)
    {
        errors.push(format!("{at}: {x} above maximum"));
    }
}

fn type_matches(t: &str, value: &Value) -> bool {
    match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        other => panic!("unknown type {other}"),
    }
}

#[test]
fn schema_is_draft_2020_12_with_an_id() {
    let schema = report_json_schema();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert!(
        schema["$id"]
            .as_str()
            .is_some_and(|id| id.ends_with("report-v1.schema.json"))
    );
    assert_eq!(schema["properties"]["schema"]["const"], 1);
}

#[test]
fn every_object_in_the_schema_rejects_unknown_properties() {
    fn walk(schema: &Value, at: &str, objects: &mut usize) {
        match schema {
            Value::Object(map) => {
                if map.contains_key("properties") {
                    *objects += 1;
                    assert_eq!(
                        map.get("additionalProperties"),
                        Some(&Value::Bool(false)),
                        "{at} allows unknown properties"
                    );
                }
                for (key, sub) in map {
                    walk(sub, &format!("{at}/{key}"), objects);
                }
            }
            Value::Array(items) => {
                for (i, sub) in items.iter().enumerate() {
                    walk(sub, &format!("{at}/{i}"), objects);
                }
            }
            _ => {}
        }
    }
    let mut objects = 0;
    walk(&report_json_schema(), "#", &mut objects);
    // Report, DeclaredLine, DeclaredLocation, DeviceFacts, ProxyFacts,
    // ConsentRecord, ReportTrace, EngineFallback, Hop, EndpointAttempt,
    // ReceiverEnvelope, EnvelopeHeaders, EnvelopeTls, ArrivalTrust.
    assert_eq!(objects, 14);
}

#[test]
fn example_and_fixtures_validate_against_the_schema() {
    let schema = report_json_schema();
    let checker = Checker { root: &schema };
    let docs = [
        ("config/report.example.json", example()),
        ("full_stored.json", fixture("full_stored.json")),
        ("minimal.json", fixture("minimal.json")),
        ("system_engine.json", fixture("system_engine.json")),
    ];
    for (name, doc) in docs {
        let errors = checker.errors(&doc);
        assert!(errors.is_empty(), "{name} breaks the schema: {errors:#?}");
        // And the types agree.
        Report::from_json(&serde_json::to_vec(&doc).expect("encodes")).expect(name);
    }
}

#[test]
fn schema_and_types_reject_the_same_breakages() {
    type Breakage = fn(&mut Value);
    let schema = report_json_schema();
    let checker = Checker { root: &schema };
    let breakages: [(&str, Breakage); 10] = [
        ("unknown top-level field", |d| {
            d["extra"] = Value::Bool(true);
        }),
        ("unknown nested field", |d| {
            d["trace"]["hops"][0]["asn"] = 4134.into();
        }),
        ("schema 2", |d| d["schema"] = 2.into()),
        ("UUIDv4 id", |d| {
            d["report_id"] = "3f2b8c1e-4d5a-4e6f-9a7b-8c9d0e1f2a3b".into();
        }),
        ("nine addresses", |d| {
            d["trace"]["hops"][0]["addrs"] = (1..=9)
                .map(|i| format!("203.0.113.{i}"))
                .collect::<Vec<_>>()
                .into();
        }),
        ("TTL 0", |d| d["trace"]["hops"][0]["ttl"] = 0.into()),
        ("province name", |d| {
            d["declared"]["province"] = "Guangdong".into();
        }),
        ("engine", |d| {
            d["trace"]["engine"] = "system:C:\\tracert.exe".into();
        }),
        ("latitude", |d| {
            d["declared"]["location"]["lat"] = 95.0.into();
        }),
        ("overlong account", |d| d["account"] = "9".repeat(65).into()),
    ];
    for (what, breakage) in breakages {
        let mut doc = example();
        breakage(&mut doc);
        assert!(!checker.errors(&doc).is_empty(), "schema accepts {what}");
        let decoded = Report::from_json(&serde_json::to_vec(&doc).expect("encodes"));
        assert!(decoded.is_err(), "types accept {what}");
    }
}

#[test]
fn fields_the_schema_requires_are_required_by_the_types() {
    let schema = report_json_schema();
    let minimal = fixture("minimal.json");
    let objects = [
        ("", "/required"),
        ("/declared", "/$defs/DeclaredLine/required"),
        ("/device", "/$defs/DeviceFacts/required"),
        ("/device/proxy", "/$defs/ProxyFacts/required"),
        ("/trace", "/$defs/ReportTrace/required"),
    ];
    let mut checked = 0;
    for (object, required) in objects {
        let names = schema
            .pointer(required)
            .and_then(Value::as_array)
            .expect(required);
        for name in names {
            let name = name.as_str().expect("name");
            let mut doc = minimal.clone();
            let removed = doc
                .pointer_mut(object)
                .and_then(Value::as_object_mut)
                .and_then(|o| o.remove(name));
            assert!(
                removed.is_some(),
                "minimal.json lacks required {object}/{name}"
            );
            let result = Report::from_json(&serde_json::to_vec(&doc).expect("encodes"));
            assert!(
                result.is_err(),
                "types accept a report without {object}/{name}"
            );
            checked += 1;
        }
    }
    // The minimal fixture holds nothing optional: every key in it is required.
    assert_eq!(checked, count_keys(&minimal));
}

/// Keys in a JSON document, counting nested objects' keys too.
fn count_keys(v: &Value) -> usize {
    v.as_object()
        .map_or(0, |o| o.len() + o.values().map(count_keys).sum::<usize>())
}
