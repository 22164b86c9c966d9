//! `lineprobe-sync trace parse|first-hop` through the real binary: arguments,
//! files and standard input, JSON on stdout, exit codes and stderr.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/traces")
        .join(name)
}

fn sync(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lineprobe-sync"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lineprobe-sync");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("wait for lineprobe-sync")
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

fn hop_list(v: &Value) -> Vec<(u64, Vec<String>)> {
    v["hops"]
        .as_array()
        .expect("hops array")
        .iter()
        .map(|h| {
            let addrs = h["addrs"]
                .as_array()
                .expect("addrs array")
                .iter()
                .map(|a| a.as_str().expect("addr string").to_owned())
                .collect();
            (h["ttl"].as_u64().expect("ttl"), addrs)
        })
        .collect()
}

const LINUX: &str = "traceroute to 198.51.100.20 (198.51.100.20), 30 hops max, 60 byte packets
 1  192.168.0.1  0.401 ms  0.377 ms  0.365 ms
 2  100.64.3.1  1.911 ms  1.903 ms  1.890 ms
 3  * * *
 4  203.0.113.9  4.120 ms !H  4.100 ms !H  4.090 ms !H
";

#[test]
fn parse_reads_a_gbk_tracert_file() {
    let v = json(&sync(
        &[
            "trace",
            "parse",
            example("home-cgnat-tracert-zh-CN.txt")
                .to_str()
                .expect("utf-8 path"),
        ],
        b"",
    ));
    assert_eq!(v["format"], "windows-tracert");
    assert_eq!(v["target"], "203.0.113.80");
    let hops = hop_list(&v);
    assert_eq!(hops.len(), 7);
    assert_eq!(hops[0], (1, vec!["192.168.1.1".to_owned()]));
    assert_eq!(hops[2], (3, vec![]));
    assert_eq!(hops[3], (4, vec!["113.108.209.1".to_owned()]));
    // Every list is present even when empty, for scripts.
    for h in v["hops"].as_array().expect("hops") {
        for key in ["addrs", "names", "rtt_ms", "annotations"] {
            assert!(h[key].is_array(), "{key} missing in {h}");
        }
    }
    assert_eq!(v["hops"][0]["rtt_ms"], serde_json::json!([0.5, 0.5, 0.5]));
}

#[test]
fn parse_reads_standard_input_with_dash_and_without_file() {
    for args in [&["trace", "parse", "-"][..], &["trace", "parse"][..]] {
        let v = json(&sync(args, LINUX.as_bytes()));
        assert_eq!(v["format"], "traceroute");
        let hops = hop_list(&v);
        assert_eq!(hops.len(), 4);
        assert_eq!(hops[3], (4, vec!["203.0.113.9".to_owned()]));
        assert_eq!(v["hops"][3]["annotations"][0], "!H");
    }
}

#[test]
fn unrecognized_input_exits_2_with_a_message() {
    let out = sync(
        &["trace", "parse", "-"],
        b"hello, this is not a traceroute\n",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unrecognized trace text") && err.contains("tracert"),
        "{err}"
    );
}

#[test]
fn missing_file_exits_2_naming_it() {
    let out = sync(&["trace", "parse", "/nonexistent/lineprobe.txt"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/lineprobe.txt"));
}

#[test]
fn first_hop_skips_home_router_cgnat_and_silent_hops() {
    let v = json(&sync(
        &[
            "trace",
            "first-hop",
            example("home-cgnat-tracert-zh-CN.txt")
                .to_str()
                .expect("utf-8 path"),
        ],
        b"",
    ));
    assert_eq!(v["first_public_hop"]["ttl"], 4);
    assert_eq!(v["first_public_hop"]["addr"], "113.108.209.1");
    assert_eq!(v["cgnat_seen"], true);
    let kinds: Vec<&str> = v["hops"]
        .as_array()
        .expect("hops")
        .iter()
        .map(|h| h["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        &kinds[..4],
        ["private", "shared-cgnat", "no-reply", "public"]
    );
}

#[test]
fn first_hop_is_null_when_only_documentation_ranges_answer() {
    let v = json(&sync(&["trace", "first-hop", "-"], LINUX.as_bytes()));
    assert!(v["first_public_hop"].is_null(), "{v}");
    assert_eq!(v["hops"][3]["addrs"][0]["class"], "documentation");
}

#[test]
fn first_hop_honours_lab_public_cidrs() {
    let v = json(&sync(
        &["trace", "first-hop", "--public-cidr", "203.0.113.0/24", "-"],
        LINUX.as_bytes(),
    ));
    assert_eq!(v["first_public_hop"]["ttl"], 4);
    assert_eq!(v["first_public_hop"]["addr"], "203.0.113.9");
}

#[test]
fn bad_public_cidr_exits_2_saying_what_to_write() {
    let out = sync(
        &["trace", "first-hop", "--public-cidr", "203.0.113.0/33", "-"],
        LINUX.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("203.0.113.0/33") && err.contains("203.0.113.0/24"),
        "{err}"
    );
}
