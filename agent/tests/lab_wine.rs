//! The agent built for Windows, under Wine, in the network lab: its two
//! Windows engines, `windows-icmp` (the IP Helper API's echo requests with a
//! TTL, as on a Windows PC without Administrator rights) and `trippy`
//! (trippy-core on Winsock raw sockets), from behind the home router and the
//! carrier-grade NAT, through the carrier's routers.
//!
//! Needs the agent built for `x86_64-pc-windows-gnu`, named by
//! `LINEPROBE_WINDOWS_AGENT`, and Wine (`.ci/wine-run`); `.ci/run` builds it
//! and runs this test with it after the Windows tests. Without the variable
//! the test says so and skips (the README's test command builds nothing for
//! Windows).
#![cfg(target_os = "linux")]

mod lab;

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use lab::{Lab, run_bounded};
use lineprobe_shared::{Classifier, ClassifierConfig, Hop};

/// A command of the Windows agent under Wine in `sub`, with its own Wine
/// prefix and state folder: the Wine server and the driver host that sends
/// the echo requests start in `sub`'s namespace.
fn windows_agent(lab: &Lab, agent: &Path, prefix: &Path, state: &Path, args: &[&str]) -> String {
    let runner = lab::wine_runner();
    let state = lab::wine_path(state);
    let mut cmd = lab.exec(
        "sub",
        &[
            &[
                runner.to_str().expect("a UTF-8 path"),
                agent.to_str().expect("a UTF-8 path"),
                "--state-dir",
                &state,
            ][..],
            args,
        ]
        .concat(),
    );
    cmd.env("WINEPREFIX", prefix);
    // The first start in a new prefix sets it up (10-20 s).
    let out = run_bounded(cmd, Duration::from_mins(3)).expect("the agent runs under Wine");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn lab_windows_engines_under_wine_find_the_hops_and_the_first_public_hop() {
    let test = "lab_windows_engines_under_wine_find_the_hops_and_the_first_public_hop";
    let Some(agent) = lab::windows_agent_or_skip(test) else {
        return;
    };
    // Dropped after the lab, whose removal kills the Wine processes first.
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(lab) = Lab::start_or_skip(test) else {
        return;
    };
    let prefix = dir.path().join("wine");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state folder");
    let consent = windows_agent(&lab, &agent, &prefix, &state, &["consent", "--accept"]);
    assert!(consent.starts_with("consent recorded"), "{consent}");

    // r3 answers echo requests: a trace reaches it at TTL 5, past r2,
    // which never sends time-exceeded. Both engines of a Windows PC: the
    // IP Helper API's echo requests (no Administrator rights needed) and
    // trippy-core on Winsock raw sockets (Wine as root has them).
    let target = lab.answering_target(false);
    let classifier = Classifier::new(&ClassifierConfig {
        extra_public: lab.public_cidrs(),
    })
    .expect("lab ranges are acceptable");
    for engine in ["windows-icmp", "trippy"] {
        let json = windows_agent(
            &lab,
            &agent,
            &prefix,
            &state,
            &["trace", &target.to_string(), "--engine", engine, "--json"],
        );
        let trace: serde_json::Value = serde_json::from_str(&json).expect("the trace as JSON");
        let kind = if engine == "trippy" {
            "trippy-core"
        } else {
            engine
        };
        assert_eq!(trace["engine"], kind, "{json}");
        let hops: Vec<Hop> = serde_json::from_value(trace["hops"].clone()).expect("hops");
        let responding: Vec<(u8, IpAddr)> = hops
            .iter()
            .flat_map(|h| h.addrs.iter().map(move |a| (h.ttl, *a)))
            .collect();
        let mut expected: Vec<(u8, IpAddr)> = lab
            .expected_hops(false)
            .into_iter()
            .zip(1_u8..)
            .filter_map(|(addr, ttl)| addr.map(|a| (ttl, a)))
            .filter(|(_, a)| *a != target)
            .collect();
        expected.push((5, target));
        // The trace ends where the target answered.
        assert_eq!(responding, expected, "{engine}: {json}");
        assert_eq!(hops.last().map(|h| h.ttl), Some(5), "{engine}: {json}");
        assert!(
            hops.iter().any(|h| h.ttl == 4 && h.is_silent()),
            "{engine}: r2 is silent: {json}"
        );
        // The first public hop past both NATs is r1, as on Linux.
        let analysis = classifier.first_public_hop(&hops, Some(target));
        assert_eq!(
            analysis.first_public_addr(),
            Some((3, lab.addr("r1"))),
            "{engine}: {json}"
        );
    }
}
