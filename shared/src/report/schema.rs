//! The report's JSON Schema, generated from the types.
//!
//! The committed copy in `shared/schema/report-v1.schema.json` is what probe
//! authors read; a test keeps it identical to what this generates.

use serde_json::{Value, json};

use super::{Report, ReportLimits};

/// The JSON Schema (draft 2020-12) of report schema version 1.
///
/// Generated from [`Report`] and its parts, with the hop limits of
/// [`ReportLimits`] added to the shared `Hop` definition, which knows no
/// limits of its own (parsers may read longer traces than a report carries).
pub fn report_json_schema() -> Value {
    let mut schema = schemars::schema_for!(Report).to_value();
    if let Some(object) = schema.as_object_mut() {
        object.insert(
            "$id".to_owned(),
            json!("https://lineprobe.example.invalid/schema/report-v1.schema.json"),
        );
    }
    if let Some(hop) = schema.pointer_mut("/$defs/Hop/properties") {
        limit(hop, "ttl", &[("minimum", json!(1))]);
        limit(
            hop,
            "addrs",
            &[("maxItems", json!(ReportLimits::MAX_ADDRS_PER_HOP))],
        );
        limit(
            hop,
            "names",
            &[("maxItems", json!(ReportLimits::MAX_NAMES_PER_HOP))],
        );
        limit(
            hop,
            "rtt_ms",
            &[("maxItems", json!(ReportLimits::MAX_RTTS_PER_HOP))],
        );
        limit(
            hop,
            "annotations",
            &[("maxItems", json!(ReportLimits::MAX_ANNOTATIONS_PER_HOP))],
        );
        if let Some(items) = hop.pointer_mut("/names/items") {
            limit_here(
                items,
                &[
                    ("minLength", json!(1)),
                    ("maxLength", json!(ReportLimits::MAX_HOSTNAME_LEN)),
                ],
            );
        }
        if let Some(items) = hop.pointer_mut("/rtt_ms/items") {
            limit_here(
                items,
                &[
                    ("minimum", json!(0)),
                    ("maximum", json!(ReportLimits::MAX_RTT_MS)),
                ],
            );
        }
        if let Some(items) = hop.pointer_mut("/annotations/items") {
            limit_here(
                items,
                &[
                    ("minLength", json!(1)),
                    ("maxLength", json!(ReportLimits::MAX_ANNOTATION_LEN)),
                ],
            );
        }
    }
    schema
}

fn limit(properties: &mut Value, name: &str, keywords: &[(&str, Value)]) {
    if let Some(property) = properties.get_mut(name) {
        limit_here(property, keywords);
    }
}

fn limit_here(schema: &mut Value, keywords: &[(&str, Value)]) {
    if let Some(object) = schema.as_object_mut() {
        for (key, value) in keywords {
            object.insert((*key).to_owned(), value.clone());
        }
    }
}
