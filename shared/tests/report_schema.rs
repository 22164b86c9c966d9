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
