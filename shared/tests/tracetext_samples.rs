//! Accuracy of the trace-text parsers on real outputs.
//!
//! The reference samples live beside the repository (`../shared/samples`), not
//! in it: they are real outputs from other people's machines, read here to
//! measure the parsers, never copied into the project. The goal the project
//! holds itself to is that at least 95 % of files give exactly the right hop
//! list (TTLs and addresses, in order).
//!
//! Where the samples are absent (a developer checkout without them) the test
//! says so and passes; CI sets `LINEPROBE_REQUIRE_SAMPLES=1` so that there a
//! missing folder is a failure.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use lineprobe_shared::parse_trace_bytes;

fn samples_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("LINEPROBE_SAMPLES_DIR") {
        return Some(PathBuf::from(dir));
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/samples");
    dir.is_dir().then_some(dir)
}

type Expected = BTreeMap<String, Vec<(u8, Vec<IpAddr>)>>;

#[test]
fn parsers_meet_the_accuracy_goal_on_reference_samples() {
    let Some(dir) = samples_dir() else {
        assert!(
            std::env::var_os("LINEPROBE_REQUIRE_SAMPLES").is_none(),
            "LINEPROBE_REQUIRE_SAMPLES is set but ../shared/samples was not found \
             (set LINEPROBE_SAMPLES_DIR to its location)"
        );
        eprintln!("skipped: ../shared/samples not found beside the repository");
        return;
    };
    let expected: Expected = serde_json::from_slice(
        &std::fs::read(dir.join("expected_hops.json")).expect("read expected_hops.json"),
    )
    .expect("expected_hops.json is a map of file to [[ttl, [addrs]]]");

    let mut exact = 0usize;
    let mut failures = Vec::new();
    for (file, want) in &expected {
        let raw = std::fs::read(dir.join(file)).expect("sample listed in expected_hops.json");
        match parse_trace_bytes(&raw) {
            Ok(trace) => {
                let got: Vec<(u8, Vec<IpAddr>)> = trace
                    .hops
                    .iter()
                    .map(|h| (h.ttl, h.addrs.clone()))
                    .collect();
                if &got == want {
                    exact += 1;
                } else {
                    failures.push(format!("{file}: got {got:?}, want {want:?}"));
                }
            }
            Err(e) => failures.push(format!("{file}: error: {e}")),
        }
    }

    // Every sample, listed in expected_hops.json or not, must at least parse.
    let mut unparsed = Vec::new();
    for entry in walk(&dir) {
        let rel = entry
            .strip_prefix(&dir)
            .expect("under dir")
            .to_string_lossy()
            .replace('\\', "/");
        if rel == "expected_hops.json"
            || entry
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("md"))
            || expected.contains_key(&rel)
        {
            continue;
        }
        let raw = std::fs::read(&entry).expect("read sample");
        if let Err(e) = parse_trace_bytes(&raw) {
            unparsed.push(format!("{rel}: {e}"));
        }
    }

    let total = expected.len();
    #[allow(clippy::cast_precision_loss)]
    let rate = exact as f64 / total as f64;
    println!("exact hop lists: {exact}/{total} ({:.1} %)", rate * 100.0);
    for f in &failures {
        println!("MISMATCH {f}");
    }
    for f in &unparsed {
        println!("UNPARSED {f}");
    }
    assert!(
        rate >= 0.95,
        "accuracy {:.1} % is below the 95 % goal:\n{}",
        rate * 100.0,
        failures.join("\n")
    );
    assert!(
        unparsed.is_empty(),
        "samples that did not parse:\n{}",
        unparsed.join("\n")
    );
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read samples dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
