//! The `trippy` engine (and `auto` around it) in the network lab.
//!
//! As root, trippy-core must find every hop that answers and the right first
//! public hop, quickly even when the destination never answers. As `nobody`
//! it must say what it needs and `auto` must fall back; with `CAP_NET_RAW`
//! only permitted (a file capability), it must raise it and trace.
//!
//! The unprivileged cases re-run this test binary as another user: the
//! `child_*` tests do nothing unless `LINEPROBE_LAB_CHILD` names them, and
//! print their findings on a `RESULT` line for the parent to judge.
#![cfg(target_os = "linux")]

mod lab;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lab::{Lab, NOBODY, run_bounded};
use lineprobe_agent::{Engine, TraceOutcome, TraceRequest, TrippyEngine, trace_auto_platform};
use lineprobe_shared::{Classifier, ClassifierConfig, Hop, TraceEngine, TraceProtocol};

/// The speed bound of the issue: one round plus the grace period.
const SILENT_BOUND: Duration = Duration::from_millis(1500);

const CHILD_ENV: &str = "LINEPROBE_LAB_CHILD";
const TARGET_ENV: &str = "LINEPROBE_LAB_TARGET";
const RESULT: &str = "RESULT ";

/// `(ttl, address)` of every hop that answered.
fn responding(hops: &[Hop]) -> Vec<(u8, IpAddr)> {
    hops.iter()
        .flat_map(|h| h.addrs.iter().map(move |a| (h.ttl, *a)))
        .collect()
}

fn expected_responding(lab: &Lab, v6: bool) -> Vec<(u8, IpAddr)> {
    lab.expected_hops(v6)
        .into_iter()
        .zip(1_u8..)
        .filter_map(|(addr, ttl)| addr.map(|a| (ttl, a)))
        .collect()
}

/// The first expected hop inside the lab's public ranges.
fn expected_first_public(lab: &Lab, v6: bool) -> (u8, IpAddr) {
    let public = lab.public_cidrs();
    expected_responding(lab, v6)
        .into_iter()
        .find(|(_, a)| public.iter().any(|net| net.contains(a)))
        .expect("the lab has a public hop")
}

fn trippy_from_sub(lab: &Lab, request: &TraceRequest) -> (TraceOutcome, Duration) {
    lab.in_netns("sub", || {
        let engine = TrippyEngine::new();
        assert_eq!(engine.check_available(), Ok(()), "root has CAP_NET_RAW");
        let started = Instant::now();
        let outcome = engine
            .trace(request)
            .unwrap_or_else(|e| panic!("trippy to {}: {e}", request.target));
        (outcome, started.elapsed())
    })
}

#[test]
fn lab_trippy_finds_every_responding_hop_and_the_first_public_hop() {
    let Some(lab) =
        Lab::start_or_skip("lab_trippy_finds_every_responding_hop_and_the_first_public_hop")
    else {
        return;
    };
    let classifier = Classifier::new(&ClassifierConfig {
        extra_public: lab.public_cidrs(),
    })
    .expect("lab ranges are acceptable");
    for v6 in [false, true] {
        let target = lab.silent_target(v6);
        // The defaults: ICMP, TTL 1-30, one round, 1 s grace.
        let request = TraceRequest::new(target, target.to_string());
        let (outcome, took) = trippy_from_sub(&lab, &request);
        assert_eq!(outcome.engine, TraceEngine::TrippyCore);
        assert_eq!(outcome.protocol, TraceProtocol::Icmp);
        assert!(!outcome.reached);
        assert_eq!(
            responding(&outcome.hops),
            expected_responding(&lab, v6),
            "{:#?}",
            outcome.hops
        );
        // Every TTL was probed once and is listed, silent ones included.
        let ttls: Vec<u8> = outcome.hops.iter().map(|h| h.ttl).collect();
        assert_eq!(ttls, (1..=30).collect::<Vec<u8>>());
        assert!(outcome.hops.iter().all(|h| h.sent == 1));
        for hop in outcome.hops.iter().filter(|h| !h.is_silent()) {
            assert_eq!(hop.received, 1);
            assert_eq!(hop.rtt_ms.len(), 1);
            assert!(hop.rtt_ms.iter().all(|ms| *ms >= 0.0 && *ms < 1000.0));
        }
        let analysis = classifier.first_public_hop(&outcome.hops, Some(target));
        assert_eq!(
            analysis.first_public_addr(),
            Some(expected_first_public(&lab, v6))
        );
        assert!(
            took <= SILENT_BOUND,
            "a trace to a silent destination took {took:?} (bound {SILENT_BOUND:?})"
        );
        eprintln!("trippy v6={v6} to the silent receiver: {took:?}");
    }
}

#[test]
fn lab_trippy_reaches_an_answering_target_with_each_protocol() {
    let Some(lab) = Lab::start_or_skip("lab_trippy_reaches_an_answering_target_with_each_protocol")
    else {
        return;
    };
    for v6 in [false, true] {
        let target = lab.answering_target(v6);
        let mut expected = expected_responding(&lab, v6);
        expected.retain(|(_, a)| *a != target);
        expected.push((5, target));
        for protocol in [TraceProtocol::Icmp, TraceProtocol::Udp, TraceProtocol::Tcp] {
            let mut request = TraceRequest::new(target, target.to_string());
            request.protocol = protocol;
            request.rounds = 2;
            if protocol == TraceProtocol::Tcp {
                request.port = 80;
            }
            let (outcome, took) = trippy_from_sub(&lab, &request);
            let label = format!("{protocol} v6={v6}");
            assert!(outcome.reached, "{label}: {:#?}", outcome.hops);
            assert_eq!(outcome.protocol, protocol);
            assert_eq!(responding(&outcome.hops), expected, "{label}");
            assert_eq!(outcome.hops.len(), 5, "{label}: stops at the destination");
            let last = outcome.hops.last().expect("hops");
            assert_eq!((last.sent, last.received), (2, 2), "{label}");
            assert!(took < request.deadline, "{label}: {took:?}");
        }
    }
}

/// The addresses a classic `traceroute` (one destination port per probe)
/// from `sub` sees at TTL 4 with ten probes.
fn classic_traceroute_ttl4(lab: &Lab, target: IpAddr) -> Vec<IpAddr> {
    let target = target.to_string();
    let cmd = lab.exec(
        "sub",
        &[
            "traceroute",
            "-n",
            "-q",
            "10",
            "-f",
            "4",
            "-m",
            "4",
            "-w",
            "1",
            &target,
        ],
    );
    let out = run_bounded(cmd, Duration::from_secs(30)).expect("traceroute runs");
    assert!(out.status.success(), "traceroute: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut seen: Vec<IpAddr> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("4 "))
        .flat_map(str::split_whitespace)
        .filter_map(|w| w.parse().ok())
        .collect();
    seen.sort_unstable();
    seen.dedup();
    seen
}

#[test]
fn lab_trippy_udp_keeps_one_path_through_a_router_balancing_per_flow() {
    let test = "lab_trippy_udp_keeps_one_path_through_a_router_balancing_per_flow";
    let Some(mut lab) = Lab::start_or_skip(test) else {
        return;
    };
    if !lab::tool_or_skip(test, "traceroute", "traceroute") {
        return;
    }
    lab.add_ecmp();
    for v6 in [false, true] {
        let target = lab.answering_target(v6);
        let branches = lab.ecmp_addrs(v6);
        // The lab does balance per flow: a classic traceroute's ten probes
        // at TTL 4 (ten destination ports) pass both routers. Each run has
        // a 2 in 1024 chance of hashing all ten alike; a few runs rule
        // that out.
        let classic = (0..5)
            .map(|_| classic_traceroute_ttl4(&lab, target))
            .find(|seen| seen.len() > 1);
        assert_eq!(
            classic.as_deref(),
            Some(&branches[..]),
            "v6={v6}: classic traceroute should see both of {branches:?} at TTL 4"
        );
        // trippy's UDP probes of a trace are one flow: one router at TTL 4
        // in every round (the later rounds are a second trippy run), and a
        // path of routers that exist.
        for attempt in 0..3 {
            let mut request = TraceRequest::new(target, target.to_string());
            request.protocol = TraceProtocol::Udp;
            request.rounds = 6;
            let (outcome, _) = trippy_from_sub(&lab, &request);
            let label = format!("v6={v6}, trace {attempt}");
            assert!(outcome.reached, "{label}: {:#?}", outcome.hops);
            let hop4 = outcome.hops.iter().find(|h| h.ttl == 4).expect("TTL 4");
            assert_eq!(hop4.addrs.len(), 1, "{label}: {hop4:?}");
            assert!(branches.contains(&hop4.addrs[0]), "{label}: {hop4:?}");
            assert_eq!((hop4.sent, hop4.received), (6, 6), "{label}: {hop4:?}");
            let mut expected = expected_responding(&lab, v6);
            expected.insert(3, (4, hop4.addrs[0]));
            assert_eq!(responding(&outcome.hops), expected, "{label}");
        }
    }
}

#[test]
fn lab_trippy_with_the_agents_default_rounds_keeps_to_the_bound() {
    let Some(lab) =
        Lab::start_or_skip("lab_trippy_with_the_agents_default_rounds_keeps_to_the_bound")
    else {
        return;
    };
    let rounds = lineprobe_agent::AgentConfig::default().trace.rounds;
    assert!(rounds > 1, "the default sends several rounds: {rounds}");
    for v6 in [false, true] {
        let target = lab.silent_target(v6);
        let mut request = TraceRequest::new(target, target.to_string());
        request.rounds = rounds;
        let (outcome, took) = trippy_from_sub(&lab, &request);
        assert!(!outcome.reached);
        assert_eq!(responding(&outcome.hops), expected_responding(&lab, v6));
        for hop in outcome.hops.iter().filter(|h| !h.is_silent()) {
            assert_eq!(
                (hop.sent, hop.received),
                (rounds.into(), rounds.into()),
                "{hop:?}"
            );
        }
        assert!(
            took <= SILENT_BOUND,
            "{rounds} rounds to a silent destination took {took:?} (bound {SILENT_BOUND:?})"
        );
        eprintln!("trippy v6={v6}, {rounds} rounds, to the silent receiver: {took:?}");
    }
}

#[test]
fn lab_trippy_keeps_to_a_short_deadline() {
    let Some(lab) = Lab::start_or_skip("lab_trippy_keeps_to_a_short_deadline") else {
        return;
    };
    let target = lab.silent_target(false);
    let mut request = TraceRequest::new(target, target.to_string());
    // Five rounds of a silent destination take about 1.1 s for the first
    // and 0.1-0.2 s for each later one; the deadline cuts that to the
    // rounds finished by then.
    request.rounds = 5;
    request.deadline = Duration::from_millis(1300);
    let (outcome, took) = trippy_from_sub(&lab, &request);
    assert!(took < Duration::from_millis(1600), "took {took:?}");
    assert_eq!(responding(&outcome.hops), expected_responding(&lab, false));
    let sent = outcome.hops.first().map_or(0, |h| h.sent);
    assert!(
        (1..5).contains(&sent),
        "rounds finished by the deadline: {sent}"
    );
}

#[test]
fn lab_trippy_ends_at_a_router_that_refuses_the_probes_with_its_mark() {
    let Some(lab) =
        Lab::start_or_skip("lab_trippy_ends_at_a_router_that_refuses_the_probes_with_its_mark")
    else {
        return;
    };
    // r3 refuses to forward anything to the receiver: administratively
    // prohibited, which traceroute marks `!X` in both families (ICMPv4 code
    // 13, ICMPv6 code 1).
    for (tool, with) in [
        ("iptables", "icmp-admin-prohibited"),
        ("ip6tables", "icmp6-adm-prohibited"),
    ] {
        let out = run_bounded(
            lab.exec(
                "r3",
                &[
                    tool,
                    "-A",
                    "FORWARD",
                    "-o",
                    "up0",
                    "-j",
                    "REJECT",
                    "--reject-with",
                    with,
                ],
            ),
            Duration::from_secs(10),
        )
        .expect("iptables runs");
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for v6 in [false, true] {
        for protocol in [TraceProtocol::Icmp, TraceProtocol::Udp] {
            let target = lab.silent_target(v6);
            let mut request = TraceRequest::new(target, target.to_string());
            request.protocol = protocol;
            request.rounds = 2;
            let (outcome, _) = trippy_from_sub(&lab, &request);
            let label = format!("{protocol} v6={v6}");
            assert!(!outcome.reached, "{label}");
            // r3 answers TTL 5 as a router and refuses TTL 6: the trace
            // ends there, as traceroute's does, instead of listing r3 at
            // every TTL to 30.
            let r3 = lab.addr_of("r3", v6);
            let mut expected = expected_responding(&lab, v6);
            expected.push((6, r3));
            assert_eq!(
                responding(&outcome.hops),
                expected,
                "{label}: {:#?}",
                outcome.hops
            );
            let last = outcome.hops.last().expect("hops");
            assert_eq!(last.annotations, ["!X"], "{label}: {last:?}");
            assert_eq!((last.sent, last.received), (2, 2), "{label}: {last:?}");
        }
    }
}

// ---- unprivileged runs ----------------------------------------------------

/// Runs the `child` test of this binary (at `binary`) in `sub` through
/// `setpriv` with `privileges`, and returns its `RESULT` line as JSON.
fn run_child(
    lab: &Lab,
    binary: &Path,
    child: &str,
    privileges: &[&str],
    target: IpAddr,
) -> serde_json::Value {
    let binary = binary.to_string_lossy().into_owned();
    let args = [
        &["setpriv"][..],
        privileges,
        &[
            "--",
            &binary,
            "--exact",
            child,
            "--nocapture",
            "--test-threads=1",
        ],
    ]
    .concat();
    let mut cmd = lab.exec("sub", &args);
    cmd.env(CHILD_ENV, child)
        .env(TARGET_ENV, target.to_string());
    let out = run_bounded(cmd, Duration::from_mins(1)).expect("child runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{child} failed:\n{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find_map(|l| l.split_once(RESULT).map(|(_, json)| json))
        .unwrap_or_else(|| panic!("{child} printed no result:\n{stdout}\n{stderr}"));
    serde_json::from_str(line).expect("the child's result is JSON")
}

/// The child's target, or `None` when this is not the child's run.
fn child_target(name: &str) -> Option<IpAddr> {
    if std::env::var(CHILD_ENV).ok().as_deref() != Some(name) {
        return None;
    }
    let target = std::env::var(TARGET_ENV).expect("the parent sets the target");
    Some(target.parse().expect("an address"))
}

fn outcome_json(outcome: &TraceOutcome) -> serde_json::Value {
    serde_json::json!({
        "engine": outcome.engine.to_string(),
        "hops": outcome.hops,
        "reached": outcome.reached,
    })
}

fn hops_of(value: &serde_json::Value) -> Vec<Hop> {
    serde_json::from_value(value["hops"].clone()).expect("hops")
}

fn capabilities(status_field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("proc status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(status_field))
        .expect("the field")
        .trim();
    u64::from_str_radix(hex, 16).expect("hex")
}

const CAP_NET_RAW_BIT: u64 = 1 << 13;

#[test]
fn child_without_privileges() {
    let Some(target) = child_target("child_without_privileges") else {
        return;
    };
    let trippy = TrippyEngine::new().check_available();
    let mut request = TraceRequest::new(target, target.to_string());
    request.max_ttl = 8;
    let (outcome, fallbacks) = trace_auto_platform(&request).expect("auto falls back");
    let result = serde_json::json!({
        "trippy": trippy.err(),
        "outcome": outcome_json(&outcome),
        "fallbacks": fallbacks,
    });
    println!("{RESULT}{result}");
}

#[test]
fn lab_trippy_without_privileges_says_why_and_auto_falls_back() {
    let Some(lab) =
        Lab::start_or_skip("lab_trippy_without_privileges_says_why_and_auto_falls_back")
    else {
        return;
    };
    let binary = shareable_binary();
    let uid = format!("--reuid={NOBODY}");
    let gid = format!("--regid={NOBODY}");
    let nobody = [
        uid.as_str(),
        gid.as_str(),
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ];
    let target = lab.silent_target(false);
    // Without raw sockets auto passes trippy over (saying why) and takes
    // the next engine, the unprivileged one (which also works with ICMP
    // sockets closed, over UDP).
    for ping_allowed in [true, false] {
        let (engine, passed_over) = ("unprivileged", &["trippy-core"][..]);
        lab.set_ping_allowed(ping_allowed);
        let result = run_child(
            &lab,
            binary.path(),
            "child_without_privileges",
            &nobody,
            target,
        );
        let why = result["trippy"].as_str().unwrap_or_default();
        assert!(why.contains("needs root or CAP_NET_RAW"), "{result}");
        let fallbacks = result["fallbacks"].as_array().cloned().unwrap_or_default();
        let names: Vec<&str> = fallbacks
            .iter()
            .filter_map(|f| f["engine"].as_str())
            .collect();
        assert_eq!(names, passed_over, "{result}");
        assert!(
            fallbacks
                .first()
                .and_then(|f| f["reason"].as_str())
                .is_some_and(|r| r.contains("CAP_NET_RAW")),
            "{result}"
        );
        assert!(
            fallbacks
                .iter()
                .all(|f| f["reason"].as_str().is_some_and(|r| !r.is_empty())),
            "{result}"
        );
        assert_eq!(result["outcome"]["engine"], engine, "{result}");
        assert_eq!(
            responding(&hops_of(&result["outcome"])),
            expected_responding(&lab, false),
            "{result}"
        );
    }
}

#[test]
fn child_with_permitted_cap_net_raw() {
    let Some(target) = child_target("child_with_permitted_cap_net_raw") else {
        return;
    };
    let permitted = capabilities("CapPrm:") & CAP_NET_RAW_BIT != 0;
    let effective_before = capabilities("CapEff:") & CAP_NET_RAW_BIT != 0;
    let available = TrippyEngine::new().check_available();
    let request = TraceRequest::new(target, target.to_string());
    let traced = TrippyEngine::new().trace(&request);
    let result = serde_json::json!({
        "permitted": permitted,
        "effective_before": effective_before,
        "available": available.err(),
        "outcome": traced.as_ref().ok().map(outcome_json),
        "error": traced.err().map(|e| e.to_string()),
    });
    println!("{RESULT}{result}");
}

#[test]
fn lab_trippy_raises_a_permitted_cap_net_raw() {
    let test = "lab_trippy_raises_a_permitted_cap_net_raw";
    let Some(lab) = Lab::start_or_skip(test) else {
        return;
    };
    let binary = shareable_binary();
    // A file capability puts CAP_NET_RAW in the permitted set only; the
    // engine must raise it into the effective set itself.
    let setcap = run_bounded(
        lab::command(
            "setcap",
            &["cap_net_raw+p", &binary.path().to_string_lossy()],
        ),
        Duration::from_secs(10),
    );
    match setcap {
        Ok(out) if out.status.success() => {}
        other => {
            let reason = format!("setcap (Debian package libcap2-bin) cannot run here: {other:?}");
            assert!(!lab::lab_required(), "LINEPROBE_REQUIRE_LAB=1 but {reason}");
            eprintln!("SKIPPED {test}: {reason}");
            return;
        }
    }
    let uid = format!("--reuid={NOBODY}");
    let gid = format!("--regid={NOBODY}");
    let privileges = [uid.as_str(), gid.as_str(), "--clear-groups"];
    let target = lab.silent_target(false);
    let result = run_child(
        &lab,
        binary.path(),
        "child_with_permitted_cap_net_raw",
        &privileges,
        target,
    );
    assert_eq!(result["permitted"], true, "{result}");
    assert_eq!(result["effective_before"], false, "{result}");
    assert!(result["available"].is_null(), "{result}");
    assert_eq!(result["outcome"]["engine"], "trippy-core", "{result}");
    assert_eq!(
        responding(&hops_of(&result["outcome"])),
        expected_responding(&lab, false),
        "{result}"
    );
}

/// A copy of this test binary that `nobody` may run (and that may carry a
/// file capability without touching the build's own file), removed on drop.
struct SharedBinary {
    dir: PathBuf,
    path: PathBuf,
}

impl SharedBinary {
    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SharedBinary {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn shareable_binary() -> SharedBinary {
    use std::os::unix::fs::PermissionsExt;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("lineprobe-lab-trippy-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let path = dir.join("lab_trippy");
    std::fs::copy(std::env::current_exe().expect("own path"), &path).expect("copy binary");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    SharedBinary { dir, path }
}
