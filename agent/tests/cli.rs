//! The command line: help, consent, status, `probe --dry-run`, errors.

mod support;

use std::process::Command as Process;
use std::sync::Arc;

use clap::{CommandFactory, Parser};
use lineprobe_agent::{Cli, SharedTracer, run_with};
use lineprobe_shared::Report;
use support::*;

#[test]
fn help_lists_every_subcommand_and_flags_the_lab_option() {
    let help = Cli::command().render_long_help().to_string();
    for sub in ["trace", "probe", "run", "status", "consent"] {
        assert!(help.contains(sub), "--help does not list `{sub}`:\n{help}");
    }
    assert!(help.contains("Lab use only"), "{help}");
    Cli::command().debug_assert();
}

fn bin() -> Process {
    Process::new(env!("CARGO_BIN_EXE_lineprobe-agent"))
}

#[test]
fn consent_and_status_through_the_binary() {
    let state = tempfile::tempdir().expect("tempdir");
    let dir = state.path().to_str().expect("utf-8 path");

    let out = bin()
        .args([
            "--state-dir",
            dir,
            "--endpoint",
            "https://127.0.0.1:9",
            "probe",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("consent --accept"), "{err}");

    let out = bin()
        .args(["--state-dir", dir, "status"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("consent: not given"), "{text}");
    assert!(text.contains("spool: 0 report(s) waiting"), "{text}");
    assert!(text.contains("last probe: never"), "{text}");

    let out = bin()
        .args(["--state-dir", dir, "consent", "--accept"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("consent recorded"));

    let out = bin()
        .args(["--state-dir", dir, "status"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("consent: accepted at") && text.contains("text version 1"),
        "{text}"
    );
    let id = std::fs::read_to_string(state.path().join("install_id")).expect("install id");
    assert!(text.contains(id.trim()), "{text}");

    let out = bin()
        .args(["--state-dir", dir, "consent", "--revoke"])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).contains("consent revoked"));
}

#[test]
fn insecure_skip_verify_says_it_is_for_the_lab() {
    let state = tempfile::tempdir().expect("tempdir");
    let dir = state.path().to_str().expect("utf-8 path");
    let out = bin()
        .args(["--state-dir", dir, "--insecure-skip-verify", "status"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lab use only") && err.contains("NOT checked"),
        "{err}"
    );
}

#[test]
fn a_bad_config_file_is_an_error_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "[declared]\ncarrier = \"Moon Telecom\"\n").expect("write");
    let out = bin()
        .args([
            "--config",
            path.to_str().expect("utf-8"),
            "--state-dir",
            dir.path().to_str().expect("utf-8"),
            "status",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Moon Telecom") && err.contains("china_mobile"),
        "{err}"
    );
}

fn tracer(hops: u8) -> SharedTracer {
    Arc::new(engines(hops).0)
}

fn run_cli(args: &[&str], hops: u8) -> (Result<(), lineprobe_agent::Error>, String) {
    let cli = Cli::parse_from(std::iter::once("lineprobe-agent").chain(args.iter().copied()));
    let mut out = Vec::new();
    let result = run_with(&cli, tracer(hops), &mut out);
    (result, String::from_utf8(out).expect("utf-8 output"))
}

#[test]
fn probe_dry_run_prints_the_report_and_sends_nothing() {
    let state = tempfile::tempdir().expect("tempdir");
    let dir = state.path().to_str().expect("utf-8");
    let config = dir.to_owned() + "/agent.toml";
    std::fs::write(
        &config,
        "[declared]\nprovince = \"CN-GD\"\ncity = \"深圳\"\ncarrier = \"中国移动\"\naddress = \"某村 3 巷\"\n",
    )
    .expect("write");
    let dead = dead_endpoint();
    let base = ["--config", &config, "--state-dir", dir, "--endpoint", &dead];

    let (result, _) = run_cli(&[&base[..], &["probe", "--dry-run"]].concat(), 5);
    assert!(
        matches!(result, Err(lineprobe_agent::Error::NoConsent)),
        "{result:?}"
    );

    run_cli(&[&base[..], &["consent", "--accept"]].concat(), 5)
        .0
        .expect("consent");
    let (result, out) = run_cli(&[&base[..], &["probe", "--dry-run"]].concat(), 5);
    result.expect("dry run");
    let report = Report::from_submitted_json(out.as_bytes()).expect("the output is a valid report");
    assert_eq!(report.trace.hops.len(), 5);
    assert_eq!(report.declared.city.as_deref(), Some("440300"));
    assert_eq!(report.declared.address, "某村 3 巷");
    assert_eq!(report.trace.target, "127.0.0.1");

    // Nothing was sent or spooled, and status says no probe ran.
    let (result, status) = run_cli(&[&base[..], &["status"]].concat(), 5);
    result.expect("status");
    assert!(status.contains("spool: 0 report(s) waiting"), "{status}");
    assert!(status.contains("last probe: never"), "{status}");
    assert!(status.contains("  none yet"), "{status}");
}

#[test]
fn probe_and_status_show_the_endpoint_results() {
    let state = tempfile::tempdir().expect("tempdir");
    let dir = state.path().to_str().expect("utf-8");
    let dead = dead_endpoint();
    let base = ["--state-dir", dir, "--endpoint", &dead];
    run_cli(&[&base[..], &["consent", "--accept"]].concat(), 3)
        .0
        .expect("consent");
    let (result, out) = run_cli(&[&base[..], &["probe"]].concat(), 3);
    result.expect("probe");
    assert!(
        out.contains("spooled: no endpoint could be reached"),
        "{out}"
    );
    let (_, status) = run_cli(&[&base[..], &["status"]].concat(), 3);
    assert!(status.contains("spool: 1 report(s) waiting"), "{status}");
    assert!(status.contains(&format!("{dead} connect")), "{status}");
    assert!(
        status.contains("last probe: ") && status.contains("spooled"),
        "{status}"
    );

    let (result, out) = run_cli(&[&base[..], &["trace", "192.0.2.9", "--json"]].concat(), 4);
    result.expect("trace");
    let trace: lineprobe_shared::ReportTrace = serde_json::from_str(&out).expect("trace JSON");
    assert_eq!(trace.hops.len(), 4);
    assert_eq!(trace.target_addr, Some("192.0.2.9".parse().expect("ip")));
    let (result, out) = run_cli(&[&base[..], &["trace", "192.0.2.9"]].concat(), 4);
    result.expect("trace");
    assert!(
        out.contains("via unprivileged") && out.contains("not used: trippy-core"),
        "{out}"
    );

    let (result, _) = run_cli(
        &[
            &base[..],
            &["trace", "192.0.2.9", "--engine", "windows-icmp"],
        ]
        .concat(),
        4,
    );
    let err = result.expect_err("no such engine").to_string();
    assert!(
        err.contains("windows-icmp") && err.contains("available"),
        "{err}"
    );
}
