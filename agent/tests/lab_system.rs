//! The `system` engine in the network lab: `traceroute` and `tracepath` run
//! from the subscriber's namespace, their text kept and parsed into the
//! lab's hops.
#![cfg(target_os = "linux")]

mod lab;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use lab::Lab;
use lineprobe_agent::{Engine, SystemEngine, SystemTool, TraceOutcome, TraceRequest};
use lineprobe_shared::{Hop, TraceEngine, TraceFormat, TraceProtocol};

/// `(ttl, address)` of every hop that answered.
fn responding(hops: &[Hop]) -> Vec<(u8, IpAddr)> {
    hops.iter()
        .flat_map(|h| h.addrs.iter().map(move |a| (h.ttl, *a)))
        .collect()
}

/// The lab's expected responding hops as `(ttl, address)`.
fn expected_responding(lab: &Lab, v6: bool) -> Vec<(u8, IpAddr)> {
    lab.expected_hops(v6)
        .into_iter()
        .zip(1_u8..)
        .filter_map(|(addr, ttl)| addr.map(|a| (ttl, a)))
        .collect()
}

/// Skips (or fails under `LINEPROBE_REQUIRE_LAB=1`) when `tool` is missing.
fn trace_from_sub(lab: &Lab, tool: SystemTool, request: &TraceRequest) -> TraceOutcome {
    let engine = SystemEngine::with_tool(tool);
    assert_eq!(engine.check_available(), Ok(()));
    lab.in_netns("sub", || engine.trace(request))
        .unwrap_or_else(|e| panic!("{} from sub: {e}", tool.program()))
}

#[test]
fn lab_system_traceroute_finds_the_responding_hops_and_keeps_its_text() {
    let test = "lab_system_traceroute_finds_the_responding_hops_and_keeps_its_text";
    let Some(lab) = Lab::start_or_skip(test) else {
        return;
    };
    if !lab::tool_or_skip(test, "traceroute", "traceroute") {
        return;
    }
    for v6 in [false, true] {
        let target = lab.silent_target(v6);
        let mut request = TraceRequest::new(target, target.to_string());
        request.max_ttl = 10;
        request.deadline = Duration::from_secs(20);
        let outcome = trace_from_sub(&lab, SystemTool::Traceroute, &request);
        let raw = outcome.raw_text.clone().unwrap_or_default();
        assert_eq!(outcome.engine, TraceEngine::System("traceroute".to_owned()));
        assert_eq!(outcome.raw_format, Some(TraceFormat::Traceroute));
        assert_eq!(outcome.protocol, TraceProtocol::Udp);
        assert!(
            raw.contains(&format!("traceroute to {target}")),
            "raw text kept:\n{raw}"
        );
        assert_eq!(
            responding(&outcome.hops),
            expected_responding(&lab, v6),
            "{raw}"
        );
        assert!(!outcome.reached, "{raw}");
        // Every TTL up to max_ttl is listed, silent ones included.
        let ttls: Vec<u8> = outcome.hops.iter().map(|h| h.ttl).collect();
        assert_eq!(ttls, (1..=10).collect::<Vec<u8>>(), "{raw}");
    }
}

#[test]
fn lab_system_traceroute_reaches_an_answering_target() {
    let test = "lab_system_traceroute_reaches_an_answering_target";
    let Some(lab) = Lab::start_or_skip(test) else {
        return;
    };
    if !lab::tool_or_skip(test, "traceroute", "traceroute") {
        return;
    }
    let target = lab.answering_target(false);
    let request = TraceRequest::new(target, target.to_string());
    let outcome = trace_from_sub(&lab, SystemTool::Traceroute, &request);
    assert!(outcome.reached, "{:?}", outcome.raw_text);
    assert_eq!(
        outcome.hops.last().map(|h| h.addrs.clone()),
        Some(vec![target])
    );
    assert_eq!(outcome.hops.len(), lab.expected_hops(false).len());
}

#[test]
fn lab_system_tracepath_is_cut_at_the_deadline_and_still_parsed() {
    let test = "lab_system_tracepath_is_cut_at_the_deadline_and_still_parsed";
    let Some(lab) = Lab::start_or_skip(test) else {
        return;
    };
    if !lab::tool_or_skip(test, "tracepath", "iputils-tracepath") {
        return;
    }
    for v6 in [false, true] {
        let target = lab.silent_target(v6);
        let mut request = TraceRequest::new(target, target.to_string());
        // tracepath waits on every silent TTL: to the silent receiver with
        // 30 TTLs it would run for long; the deadline stops it.
        request.deadline = Duration::from_secs(8);
        let started = Instant::now();
        let outcome = trace_from_sub(&lab, SystemTool::Tracepath, &request);
        let took = started.elapsed();
        let raw = outcome.raw_text.clone().unwrap_or_default();
        assert!(
            took < request.deadline + Duration::from_secs(2),
            "took {took:?}"
        );
        assert_eq!(outcome.engine, TraceEngine::System("tracepath".to_owned()));
        assert_eq!(outcome.raw_format, Some(TraceFormat::Tracepath));
        assert_eq!(
            responding(&outcome.hops),
            expected_responding(&lab, v6),
            "{raw}"
        );
        assert!(!outcome.reached, "{raw}");
    }
}

#[test]
fn lab_system_tracepath_reaches_an_answering_target() {
    let test = "lab_system_tracepath_reaches_an_answering_target";
    let Some(lab) = Lab::start_or_skip(test) else {
        return;
    };
    if !lab::tool_or_skip(test, "tracepath", "iputils-tracepath") {
        return;
    }
    let target = lab.answering_target(true);
    let request = TraceRequest::new(target, target.to_string());
    let outcome = trace_from_sub(&lab, SystemTool::Tracepath, &request);
    let raw = outcome.raw_text.clone().unwrap_or_default();
    assert!(outcome.reached, "{raw}");
    let mut expected = expected_responding(&lab, true);
    expected.retain(|(_, a)| *a != target);
    expected.push((5, target));
    assert_eq!(responding(&outcome.hops), expected, "{raw}");
}
