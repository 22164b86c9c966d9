//! One probe run up to the finished report: pick an engine, trace, and put
//! the trace, the device facts and the declared line together.
//!
//! Engines are tried best first; an engine that cannot run here, or fails,
//! is recorded with its reason in `engine_fallbacks` and the next one runs.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use lineprobe_shared::{EngineFallback, Hop, ReportLimits, ReportTrace, TraceEngine};

use crate::{Engine, Error, TraceOutcome, TraceRequest};

/// Most bytes of a system command's output put in a report: below the
/// schema's 64 KiB so that the whole report stays within a collector's
/// default 64 KiB body limit.
pub const RAW_TEXT_BUDGET: usize = 48 * 1024;

/// Runs a trace with the engine `choice` names (`auto`: the best one that
/// works here) and says which better engines were passed over and why.
///
/// Blocking. A list of engines, best first, is a `Tracer`; so is anything
/// else that can pick an engine (the engines' own automatic selection).
pub trait Tracer: Send + Sync {
    /// Traces; blocks for at most about `request.deadline`.
    fn trace(
        &self,
        choice: &str,
        request: &TraceRequest,
    ) -> Result<(TraceOutcome, Vec<EngineFallback>), Error>;
}

impl Tracer for Vec<Box<dyn Engine>> {
    fn trace(
        &self,
        choice: &str,
        request: &TraceRequest,
    ) -> Result<(TraceOutcome, Vec<EngineFallback>), Error> {
        trace_with(self, choice, request)
    }
}

/// A shared tracer, as an agent holds it.
pub type SharedTracer = Arc<dyn Tracer>;

/// Whether an engine answers to the name in `trace.engine` / `--engine`.
fn engine_matches(choice: &str, kind: &TraceEngine) -> bool {
    match choice {
        "" | "auto" => true,
        "trippy" | "trippy-core" => *kind == TraceEngine::TrippyCore,
        "unprivileged" => *kind == TraceEngine::Unprivileged,
        "windows-icmp" => *kind == TraceEngine::WindowsIcmp,
        "system" => kind.is_system(),
        other => other
            .strip_prefix("system:")
            .is_some_and(|c| *kind == TraceEngine::System(c.to_owned())),
    }
}

/// Traces with the best engine `choice` allows, falling back down the list.
/// Blocking: run it on a blocking thread.
pub fn trace_with(
    engines: &[Box<dyn Engine>],
    choice: &str,
    request: &TraceRequest,
) -> Result<(TraceOutcome, Vec<EngineFallback>), Error> {
    trace_with_named(engines, choice, request, crate::engine::engine_named)
}

/// [`trace_with`], building a `system:<tool>` engine the list lacks with
/// `named`.
fn trace_with_named(
    engines: &[Box<dyn Engine>],
    choice: &str,
    request: &TraceRequest,
    named: impl Fn(&str) -> Result<Box<dyn Engine>, Error>,
) -> Result<(TraceOutcome, Vec<EngineFallback>), Error> {
    let mut candidates = engines
        .iter()
        .filter(|e| engine_matches(choice, &e.kind()))
        .peekable();
    if candidates.peek().is_none() {
        // The list's system engine runs the first tool installed (usually
        // traceroute), so `system:tracepath` matches nothing in it although
        // the agent can run tracepath: that tool gets an engine of its own.
        if choice.starts_with("system:") && engines.iter().any(|e| e.kind().is_system()) {
            let engine = named(choice)?;
            return crate::engine::trace_auto(&[engine.as_ref()], request);
        }
        return Err(Error::EngineUnavailable {
            engine: choice.to_owned(),
            reason: if engines.is_empty() {
                "this agent was built without trace engines".to_owned()
            } else {
                format!(
                    "no engine of that name here; available: auto, {}",
                    engines
                        .iter()
                        .map(|e| e.kind().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        });
    }
    // The fallback walk itself (deadline shared across attempts, reasons
    // recorded best first) lives with the engines.
    let candidates: Vec<&dyn Engine> = candidates.map(AsRef::as_ref).collect();
    crate::engine::trace_auto(&candidates, request)
}

/// The report's trace from an engine's outcome, within the schema's limits.
pub fn report_trace(
    request: &TraceRequest,
    started_at: DateTime<FixedOffset>,
    outcome: TraceOutcome,
    mut fallbacks: Vec<EngineFallback>,
) -> ReportTrace {
    fallbacks.truncate(ReportLimits::MAX_ENGINE_FALLBACKS);
    let mut hops = outcome.hops;
    hops.truncate(ReportLimits::MAX_HOPS);
    hops.iter_mut().for_each(fit_hop);
    let system = outcome.engine.is_system();
    let raw_text =
        system.then(|| truncate_bytes(outcome.raw_text.unwrap_or_default(), RAW_TEXT_BUDGET));
    ReportTrace {
        target: cut(&request.target_name, ReportLimits::MAX_HOSTNAME_LEN),
        target_addr: Some(request.target),
        protocol: outcome.protocol,
        engine: outcome.engine,
        engine_fallbacks: fallbacks,
        started_at,
        duration_ms: u64::try_from(outcome.duration.as_millis())
            .unwrap_or(u64::MAX)
            .min(ReportLimits::MAX_TRACE_DURATION_MS),
        hops,
        raw_format: if system { outcome.raw_format } else { None },
        raw_text,
    }
}

/// The first of `candidates` (host names or addresses) that resolves, each
/// name given at most `timeout`: a blackholed resolver (a filtered network
/// often has one) can otherwise hold a lookup for tens of seconds a name.
pub async fn resolve_target(
    candidates: &[String],
    timeout: Duration,
) -> Result<(String, IpAddr), Error> {
    let mut reasons = Vec::new();
    for name in candidates {
        let bare = name.trim_matches(['[', ']']);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok((bare.to_owned(), ip));
        }
        match tokio::time::timeout(timeout, tokio::net::lookup_host((bare, 0))).await {
            Ok(Ok(mut found)) => {
                if let Some(addr) = found.next() {
                    return Ok((bare.to_owned(), addr.ip()));
                }
                reasons.push(format!("{bare}: no address"));
            }
            Ok(Err(e)) => reasons.push(format!("{bare}: {e}")),
            Err(_) => reasons.push(format!(
                "{bare}: no answer from the resolver within {} s",
                timeout.as_secs_f64()
            )),
        }
    }
    Err(Error::Target {
        target: candidates.join(", "),
        reason: if reasons.is_empty() {
            "nothing to trace to: set trace.target or configure an endpoint".to_owned()
        } else {
            reasons.join("; ")
        },
    })
}

/// Keeps a hop within the schema's per-hop limits. Engines record every
/// probe (many rounds, a load-balanced path, a system tool's odd output);
/// a report the collector would refuse for it would never be delivered.
fn fit_hop(hop: &mut Hop) {
    hop.addrs.truncate(ReportLimits::MAX_ADDRS_PER_HOP);
    hop.names.truncate(ReportLimits::MAX_NAMES_PER_HOP);
    hop.rtt_ms
        .retain(|rtt| (0.0..=ReportLimits::MAX_RTT_MS).contains(rtt));
    hop.rtt_ms.truncate(ReportLimits::MAX_RTTS_PER_HOP);
    hop.annotations
        .truncate(ReportLimits::MAX_ANNOTATIONS_PER_HOP);
    for annotation in &mut hop.annotations {
        if annotation.chars().count() > ReportLimits::MAX_ANNOTATION_LEN {
            *annotation = cut(annotation, ReportLimits::MAX_ANNOTATION_LEN);
        }
    }
    if hop.sent > 0 {
        hop.received = hop.received.min(hop.sent);
    }
}

fn cut(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

fn truncate_bytes(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_text_is_cut_on_a_character_boundary() {
        let text = "é".repeat(40_000);
        let cut = truncate_bytes(text, ReportLimits::MAX_RAW_TEXT_BYTES);
        assert!(cut.len() <= ReportLimits::MAX_RAW_TEXT_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[derive(Debug)]
    struct Failing;
    impl Engine for Failing {
        fn kind(&self) -> TraceEngine {
            TraceEngine::Unprivileged
        }
        fn check_available(&self) -> Result<(), String> {
            Ok(())
        }
        fn trace(&self, _: &TraceRequest) -> Result<TraceOutcome, Error> {
            Err(Error::TraceFailed {
                engine: "unprivileged".to_owned(),
                reason: "ping_group_range excludes this user".to_owned(),
            })
        }
    }

    #[derive(Debug)]
    struct System;
    impl Engine for System {
        fn kind(&self) -> TraceEngine {
            TraceEngine::System("tracepath".to_owned())
        }
        fn check_available(&self) -> Result<(), String> {
            Ok(())
        }
        fn trace(&self, _: &TraceRequest) -> Result<TraceOutcome, Error> {
            Ok(TraceOutcome {
                engine: self.kind(),
                protocol: lineprobe_shared::TraceProtocol::Udp,
                hops: Vec::new(),
                reached: true,
                duration: std::time::Duration::from_millis(900),
                raw_text: Some("x".repeat(RAW_TEXT_BUDGET + 10)),
                raw_format: None,
            })
        }
    }

    #[test]
    fn a_failing_engine_falls_back_and_a_system_trace_keeps_its_text() {
        let engines: Vec<Box<dyn Engine>> = vec![Box::new(Failing), Box::new(System)];
        let request = TraceRequest::new(IpAddr::from([192, 0, 2, 1]), "192.0.2.1");
        let (outcome, fallbacks) = trace_with(&engines, "auto", &request).expect("traced");
        assert_eq!(fallbacks.len(), 1);
        assert!(fallbacks[0].reason.contains("ping_group_range"));
        let trace = report_trace(
            &request,
            chrono::Utc::now().fixed_offset(),
            outcome,
            fallbacks,
        );
        assert_eq!(trace.engine.to_string(), "system:tracepath");
        assert_eq!(
            trace.raw_text.as_ref().map(String::len),
            Some(RAW_TEXT_BUDGET)
        );
        assert_eq!(trace.duration_ms, 900);

        let only_system = trace_with(&engines, "system", &request).expect("system");
        assert!(only_system.1.is_empty());
        let err = trace_with(&engines, "unprivileged", &request).expect_err("fails");
        assert!(err.to_string().contains("ping_group_range"), "{err}");
    }

    #[test]
    fn a_system_tool_other_than_the_listed_one_gets_its_own_engine() {
        // The platform list's system engine is the first tool installed.
        struct Traceroute;
        impl Engine for Traceroute {
            fn kind(&self) -> TraceEngine {
                TraceEngine::System("traceroute".to_owned())
            }
            fn check_available(&self) -> Result<(), String> {
                Ok(())
            }
            fn trace(&self, _: &TraceRequest) -> Result<TraceOutcome, Error> {
                panic!("traceroute was not asked for");
            }
        }
        let engines: Vec<Box<dyn Engine>> = vec![Box::new(Failing), Box::new(Traceroute)];
        let request = TraceRequest::new(IpAddr::from([192, 0, 2, 1]), "192.0.2.1");
        let named = |name: &str| -> Result<Box<dyn Engine>, Error> {
            assert_eq!(name, "system:tracepath");
            Ok(Box::new(System))
        };
        let (outcome, fallbacks) =
            trace_with_named(&engines, "system:tracepath", &request, named).expect("traced");
        assert_eq!(outcome.engine.to_string(), "system:tracepath");
        assert!(fallbacks.is_empty());

        // The real lookup: a tool the agent cannot read is a config error
        // naming the ones it can, not "no engine of that name here".
        let err = trace_with(&engines, "system:mtr", &request).expect_err("unknown tool");
        assert!(
            matches!(&err, Error::Config { key, .. } if key == "trace.engine"),
            "{err}"
        );
        assert!(err.to_string().contains("tracepath"), "{err}");
    }

    #[test]
    fn hops_beyond_the_schema_limits_are_cut_to_them() {
        // Twenty rounds over a path balanced across twelve routers.
        let mut hop = Hop::new(3);
        for i in 0..12u8 {
            hop.push_addr(IpAddr::from([198, 51, 100, i]));
        }
        hop.rtt_ms = (0..20).map(f64::from).collect();
        hop.rtt_ms.push(f64::NAN);
        hop.sent = 20;
        hop.received = 25;
        hop.annotations = vec!["!H".repeat(40); 10];
        let request = TraceRequest::new(IpAddr::from([192, 0, 2, 1]), "192.0.2.1");
        let trace = report_trace(
            &request,
            chrono::Utc::now().fixed_offset(),
            TraceOutcome {
                engine: TraceEngine::Unprivileged,
                protocol: lineprobe_shared::TraceProtocol::Udp,
                hops: vec![hop],
                reached: false,
                duration: std::time::Duration::from_millis(900),
                raw_text: None,
                raw_format: None,
            },
            Vec::new(),
        );
        let hop = &trace.hops[0];
        assert_eq!(hop.addrs.len(), ReportLimits::MAX_ADDRS_PER_HOP);
        assert_eq!(hop.rtt_ms.len(), ReportLimits::MAX_RTTS_PER_HOP);
        assert!(hop.rtt_ms.iter().all(|r| r.is_finite()));
        assert_eq!(hop.received, 20);
        assert_eq!(hop.annotations.len(), ReportLimits::MAX_ANNOTATIONS_PER_HOP);
        assert!(
            hop.annotations
                .iter()
                .all(|a| a.chars().count() == ReportLimits::MAX_ANNOTATION_LEN)
        );
    }
}
