//! `auto`: the best engine the device allows, falling back in order.
//!
//! The order is trippy-core (raw sockets), unprivileged ICMP sockets, the
//! Windows ICMP API, then the system's traceroute tool. Every engine passed
//! over — unavailable here, or failed while tracing — is recorded with the
//! reason, so a report says both what ran and why nothing better did.

use std::time::{Duration, Instant};

use lineprobe_shared::{EngineFallback, ReportLimits, TraceEngine};

use super::{
    Engine, SystemEngine, SystemTool, TraceOutcome, TraceRequest, TrippyEngine, UnprivilegedEngine,
    WindowsIcmpEngine,
};
use crate::Error;

/// The engines of this platform, best first: the list `auto` tries.
pub fn engines_for_platform() -> Vec<Box<dyn Engine>> {
    let mut engines: Vec<Box<dyn Engine>> = Vec::new();
    // trippy-core fails on Android; its engine says so when asked.
    if !cfg!(target_os = "android") {
        engines.push(Box::new(TrippyEngine::new()));
    }
    if cfg!(any(target_os = "linux", target_os = "android")) {
        engines.push(Box::new(UnprivilegedEngine::new()));
    }
    if cfg!(windows) {
        engines.push(Box::new(WindowsIcmpEngine::new()));
    }
    engines.push(Box::new(SystemEngine::new()));
    engines
}

/// The engine a user or config named: `trippy` (or `trippy-core`),
/// `unprivileged`, `system`, or `system:<command>` for one tool
/// (`system:tracepath`).
/// `auto` is not an engine; use [`trace_auto`] for it.
pub fn engine_named(name: &str) -> Result<Box<dyn Engine>, Error> {
    let unknown = |why: String| Error::Config {
        key: "trace.engine".to_owned(),
        reason: why,
    };
    match name.trim() {
        "trippy" | "trippy-core" => Ok(Box::new(TrippyEngine::new())),
        "unprivileged" => Ok(Box::new(UnprivilegedEngine::new())),
        "windows-icmp" => Ok(Box::new(WindowsIcmpEngine::new())),
        "system" => Ok(Box::new(SystemEngine::new())),
        other => {
            if let Some(command) = other.strip_prefix("system:") {
                let tool = [
                    SystemTool::Tracert,
                    SystemTool::Traceroute,
                    SystemTool::Tracepath,
                    SystemTool::BusyboxTraceroute,
                ]
                .into_iter()
                .find(|t| t.program() == command)
                .ok_or_else(|| {
                    unknown(format!(
                        "`{command}` is not a system tool the agent can read; use \
                         tracert, traceroute, tracepath or busybox"
                    ))
                })?;
                return Ok(Box::new(SystemEngine::with_tool(tool)));
            }
            Err(unknown(format!(
                "`{other}` is not an engine; use auto, trippy, unprivileged, windows-icmp, \
                 system or system:<tool>"
            )))
        }
    }
}

/// Traces with the first of `engines` (best first) that is available and
/// succeeds with at least one answering hop. Returns its outcome and, best
/// first, the engines passed over with the reason. When every engine that
/// ran got no answer at all, the best of those silent outcomes is returned,
/// and the entries of the others (worse ones included) say they got none
/// either. The whole run keeps to `request.deadline`: each engine gets what
/// is left of it.
pub fn trace_auto(
    engines: &[&dyn Engine],
    request: &TraceRequest,
) -> Result<(TraceOutcome, Vec<EngineFallback>), Error> {
    let started = Instant::now();
    let mut fallbacks = Vec::new();
    let mut silent: Option<TraceOutcome> = None;
    for engine in engines {
        let kind = engine.kind();
        if let Err(reason) = engine.check_available() {
            fallbacks.push(fallback(kind, &format!("not available: {reason}")));
            continue;
        }
        let left = request.deadline.saturating_sub(started.elapsed());
        if left < MIN_ATTEMPT {
            fallbacks.push(fallback(
                kind,
                &format!(
                    "not tried: the {:.1} s deadline was used up by the engines before it",
                    request.deadline.as_secs_f64()
                ),
            ));
            continue;
        }
        let mut attempt = request.clone();
        attempt.deadline = left;
        match engine.trace(&attempt) {
            Ok(outcome) if answered(&outcome) => {
                let fallbacks = without(fallbacks, &outcome.engine);
                return Ok((outcome, fallbacks));
            }
            // A firewall that drops the ICMP replies to raw sockets (Windows
            // Defender Firewall does by default) leaves every hop silent
            // although the trace "worked", and the internal side rejects a
            // trace without an answering hop; a worse engine may get through.
            Ok(outcome) => {
                fallbacks.push(fallback(kind, SILENT_REASON));
                silent.get_or_insert(outcome);
            }
            Err(e) => fallbacks.push(fallback(kind, &describe_failure(&e))),
        }
    }
    match silent {
        // Nothing did better: the best silent trace still says how far the
        // probes went unanswered, and the others' entries why no other was used.
        Some(outcome) => {
            let fallbacks = without(fallbacks, &outcome.engine);
            Ok((outcome, fallbacks))
        }
        None => Err(all_failed(&fallbacks)),
    }
}

/// Why an engine whose trace got no reply at all was passed over.
const SILENT_REASON: &str =
    "no probe was answered; a firewall may drop ICMP replies to raw sockets";

/// Whether any hop of `outcome` answered: what makes a trace usable.
fn answered(outcome: &TraceOutcome) -> bool {
    outcome.hops.iter().any(|hop| !hop.addrs.is_empty())
}

/// `fallbacks` without the entries of `engine`: a report may not list the
/// engine that ran as one passed over.
fn without(mut fallbacks: Vec<EngineFallback>, engine: &TraceEngine) -> Vec<EngineFallback> {
    fallbacks.retain(|f| f.engine != *engine);
    fallbacks
}

/// [`trace_auto`] over [`engines_for_platform`].
pub fn trace_auto_platform(
    request: &TraceRequest,
) -> Result<(TraceOutcome, Vec<EngineFallback>), Error> {
    let engines = engines_for_platform();
    let refs: Vec<&dyn Engine> = engines.iter().map(AsRef::as_ref).collect();
    trace_auto(&refs, request)
}

/// Less than this left of the deadline is not worth starting an engine for.
const MIN_ATTEMPT: Duration = Duration::from_millis(50);

fn describe_failure(error: &Error) -> String {
    match error {
        Error::EngineUnavailable { reason, .. } => format!("not available: {reason}"),
        Error::TraceFailed { reason, .. } => format!("failed while tracing: {reason}"),
        other => format!("failed while tracing: {other}"),
    }
}

/// A fallback record whose reason fits the report's rules: at most its
/// length, and no control characters but newlines and tabs. The reason
/// quotes what a tool printed, and a tool's colour codes or a stray escape
/// would make the report invalid, so that it was never made at all.
fn fallback(engine: TraceEngine, reason: &str) -> EngineFallback {
    let max = ReportLimits::MAX_DETAIL_LEN;
    let reason: String = reason
        .trim()
        .chars()
        .map(|c| {
            if c.is_control() && !matches!(c, '\n' | '\r' | '\t') {
                ' '
            } else {
                c
            }
        })
        .collect();
    let mut reason = if reason.trim().is_empty() {
        "failed without saying why".to_owned()
    } else {
        reason
    };
    if reason.chars().count() > max {
        reason = reason.chars().take(max.saturating_sub(1)).collect();
        reason.push('…');
    }
    EngineFallback { engine, reason }
}

fn all_failed(fallbacks: &[EngineFallback]) -> Error {
    let reason = if fallbacks.is_empty() {
        "no trace engine is built for this platform".to_owned()
    } else {
        fallbacks
            .iter()
            .map(|f| format!("{}: {}", f.engine, f.reason))
            .collect::<Vec<_>>()
            .join("; ")
    };
    Error::EngineUnavailable {
        engine: "auto".to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use lineprobe_shared::{Hop, TraceProtocol};

    use super::*;

    /// An engine that behaves as told and counts its traces.
    struct Fake {
        kind: TraceEngine,
        available: Result<(), String>,
        result: Result<(), String>,
        sleep: Duration,
        /// Whether its trace has an answering hop.
        answers: bool,
        traces: AtomicUsize,
    }

    impl Fake {
        fn new(kind: TraceEngine) -> Self {
            Self {
                kind,
                available: Ok(()),
                result: Ok(()),
                sleep: Duration::ZERO,
                answers: true,
                traces: AtomicUsize::new(0),
            }
        }
        /// Traces "successfully" with every hop silent, as behind a
        /// firewall that drops the replies.
        fn silent(mut self) -> Self {
            self.answers = false;
            self
        }
        fn unavailable(mut self, why: &str) -> Self {
            self.available = Err(why.to_owned());
            self
        }
        fn failing(mut self, why: &str) -> Self {
            self.result = Err(why.to_owned());
            self
        }
        fn slow(mut self, sleep: Duration) -> Self {
            self.sleep = sleep;
            self
        }
    }

    impl Engine for Fake {
        fn kind(&self) -> TraceEngine {
            self.kind.clone()
        }
        fn check_available(&self) -> Result<(), String> {
            self.available.clone()
        }
        fn trace(&self, request: &TraceRequest) -> Result<TraceOutcome, Error> {
            self.traces.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.sleep.min(request.deadline));
            match &self.result {
                Ok(()) => Ok(TraceOutcome {
                    engine: self.kind.clone(),
                    protocol: TraceProtocol::Icmp,
                    hops: vec![Hop::new(1), {
                        let mut hop = Hop::new(2);
                        if self.answers {
                            hop.push_addr(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)));
                            hop.sent = 1;
                            hop.received = 1;
                        }
                        hop
                    }],
                    reached: false,
                    duration: self.sleep,
                    raw_text: None,
                    raw_format: None,
                }),
                Err(why) => Err(Error::TraceFailed {
                    engine: self.kind.to_string(),
                    reason: why.clone(),
                }),
            }
        }
    }

    fn request() -> TraceRequest {
        TraceRequest::new(IpAddr::V4(Ipv4Addr::LOCALHOST), "localhost")
    }

    #[test]
    fn first_available_engine_runs_and_the_better_ones_are_explained() {
        let trippy = Fake::new(TraceEngine::TrippyCore).unavailable("needs root or CAP_NET_RAW");
        let unpriv = Fake::new(TraceEngine::Unprivileged);
        let system = Fake::new(TraceEngine::System("traceroute".to_owned()));
        let (outcome, fallbacks) =
            trace_auto(&[&trippy, &unpriv, &system], &request()).expect("traces");
        assert_eq!(outcome.engine, TraceEngine::Unprivileged);
        assert_eq!(fallbacks.len(), 1);
        assert_eq!(fallbacks[0].engine, TraceEngine::TrippyCore);
        assert!(fallbacks[0].reason.contains("CAP_NET_RAW"));
        assert_eq!(trippy.traces.load(Ordering::SeqCst), 0);
        assert_eq!(system.traces.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn an_engine_failing_at_run_time_falls_back_with_its_error() {
        let trippy = Fake::new(TraceEngine::TrippyCore).failing("socket: permission denied");
        let system = Fake::new(TraceEngine::System("tracepath".to_owned()));
        let (outcome, fallbacks) = trace_auto(&[&trippy, &system], &request()).expect("traces");
        assert_eq!(outcome.engine, TraceEngine::System("tracepath".to_owned()));
        assert_eq!(fallbacks.len(), 1);
        assert!(fallbacks[0].reason.starts_with("failed while tracing"));
        assert!(fallbacks[0].reason.contains("permission denied"));
    }

    #[test]
    fn all_failing_says_why_for_each() {
        let a = Fake::new(TraceEngine::TrippyCore).unavailable("needs root");
        let b = Fake::new(TraceEngine::WindowsIcmp).failing("IcmpSendEcho2 failed");
        let Err(Error::EngineUnavailable { engine, reason }) = trace_auto(&[&a, &b], &request())
        else {
            panic!("expected an error");
        };
        assert_eq!(engine, "auto");
        assert!(
            reason.contains("trippy-core: not available: needs root"),
            "{reason}"
        );
        assert!(
            reason.contains("windows-icmp: failed while tracing"),
            "{reason}"
        );
        assert!(matches!(
            trace_auto(&[], &request()),
            Err(Error::EngineUnavailable { .. })
        ));
    }

    #[test]
    fn the_deadline_covers_all_attempts() {
        let slow = Fake::new(TraceEngine::TrippyCore)
            .slow(Duration::from_secs(5))
            .failing("timed out");
        let next = Fake::new(TraceEngine::Unprivileged);
        let mut req = request();
        req.deadline = Duration::from_millis(200);
        let started = Instant::now();
        let result = trace_auto(&[&slow, &next], &req);
        assert!(started.elapsed() < Duration::from_secs(2));
        let Err(Error::EngineUnavailable { reason, .. }) = result else {
            panic!("expected an error, got {result:?}");
        };
        assert!(reason.contains("deadline was used up"), "{reason}");
        assert_eq!(next.traces.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_trace_with_no_answering_hop_falls_back_to_the_next_engine() {
        let trippy = Fake::new(TraceEngine::TrippyCore).silent();
        let unpriv = Fake::new(TraceEngine::Unprivileged).unavailable("not on Windows");
        let icmp = Fake::new(TraceEngine::WindowsIcmp);
        let system = Fake::new(TraceEngine::System("tracert".to_owned()));
        let (outcome, fallbacks) =
            trace_auto(&[&trippy, &unpriv, &icmp, &system], &request()).expect("traces");
        assert_eq!(outcome.engine, TraceEngine::WindowsIcmp);
        assert!(answered(&outcome));
        let engines: Vec<&TraceEngine> = fallbacks.iter().map(|f| &f.engine).collect();
        assert_eq!(
            engines,
            [&TraceEngine::TrippyCore, &TraceEngine::Unprivileged]
        );
        assert!(
            fallbacks[0].reason.contains("no probe was answered"),
            "{}",
            fallbacks[0].reason
        );
        assert_eq!(system.traces.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn when_every_engine_is_silent_the_best_silent_trace_is_returned() {
        let trippy = Fake::new(TraceEngine::TrippyCore).silent();
        let icmp = Fake::new(TraceEngine::WindowsIcmp).silent();
        let system = Fake::new(TraceEngine::System("tracert".to_owned())).failing("exit 1");
        let (outcome, fallbacks) =
            trace_auto(&[&trippy, &icmp, &system], &request()).expect("traces");
        assert_eq!(outcome.engine, TraceEngine::TrippyCore);
        assert!(!answered(&outcome));
        // The engine that ran is not listed as passed over; the others say
        // what they got.
        assert_eq!(fallbacks.len(), 2, "{fallbacks:?}");
        assert_eq!(fallbacks[0].engine, TraceEngine::WindowsIcmp);
        assert!(fallbacks[0].reason.contains("no probe was answered"));
        assert!(fallbacks[1].reason.contains("exit 1"));
        assert_eq!(system.traces.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_silent_trace_that_used_up_the_deadline_is_returned() {
        let slow = Fake::new(TraceEngine::TrippyCore)
            .slow(Duration::from_secs(5))
            .silent();
        let next = Fake::new(TraceEngine::Unprivileged);
        let mut req = request();
        req.deadline = Duration::from_millis(200);
        let started = Instant::now();
        let (outcome, fallbacks) = trace_auto(&[&slow, &next], &req).expect("traces");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(outcome.engine, TraceEngine::TrippyCore);
        assert_eq!(fallbacks.len(), 1);
        assert!(fallbacks[0].reason.contains("deadline was used up"));
        assert_eq!(next.traces.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn long_reasons_are_cut_to_the_report_limit() {
        let long = "x".repeat(ReportLimits::MAX_DETAIL_LEN * 2);
        let f = fallback(TraceEngine::TrippyCore, &long);
        assert_eq!(f.reason.chars().count(), ReportLimits::MAX_DETAIL_LEN);
        assert!(!fallback(TraceEngine::TrippyCore, "  ").reason.is_empty());
    }

    #[test]
    fn a_tools_escape_codes_do_not_reach_the_report() {
        // A tool's coloured complaint on stderr, quoted into the reason,
        // made the report invalid (the probe could not make one at all).
        let f = fallback(
            TraceEngine::Unprivileged,
            "traceroute failed: \u{1b}[31mNetwork is unreachable\u{1b}[0m\u{7}\nsecond line",
        );
        assert!(
            f.reason
                .chars()
                .all(|c| !c.is_control() || matches!(c, '\n' | '\t')),
            "{:?}",
            f.reason
        );
        assert!(
            f.reason.contains("Network is unreachable"),
            "{:?}",
            f.reason
        );
        assert!(
            !fallback(TraceEngine::Unprivileged, "\u{1b}\u{7}")
                .reason
                .trim()
                .is_empty()
        );
    }

    #[test]
    fn platform_list_is_ordered_best_first_and_ends_with_system() {
        let engines = engines_for_platform();
        let kinds: Vec<TraceEngine> = engines.iter().map(|e| e.kind()).collect();
        assert!(kinds.last().is_some_and(TraceEngine::is_system));
        if !cfg!(target_os = "android") {
            assert_eq!(kinds.first(), Some(&TraceEngine::TrippyCore));
        }
        if cfg!(target_os = "linux") {
            assert_eq!(kinds.get(1), Some(&TraceEngine::Unprivileged));
        }
    }

    #[test]
    fn engines_by_name() {
        assert_eq!(
            engine_named("trippy").map(|e| e.kind()).ok(),
            Some(TraceEngine::TrippyCore)
        );
        assert_eq!(
            engine_named("unprivileged").map(|e| e.kind()).ok(),
            Some(TraceEngine::Unprivileged)
        );
        assert_eq!(
            engine_named("system:tracepath").map(|e| e.kind()).ok(),
            Some(TraceEngine::System("tracepath".to_owned()))
        );
        assert!(matches!(
            engine_named("system:/bin/sh"),
            Err(Error::Config { .. })
        ));
        assert!(matches!(engine_named("nope"), Err(Error::Config { .. })));
    }
}
