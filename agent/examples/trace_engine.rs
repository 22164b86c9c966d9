//! Runs one trace engine (or `auto`) and prints the outcome as JSON; the
//! benchmark and lab tests run it inside network namespaces.
//!
//! `trace_engine <engine> <target> [--grace-ms N] [--deadline-ms N]
//! [--max-ttl N] [--rounds N] [--protocol icmp|udp|tcp]`, where engine is
//! `auto`, `trippy`, `system` or `system:<tool>`.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use lineprobe_agent::{Engine, TraceOutcome, TraceRequest, engine_named, trace_auto_platform};
use lineprobe_shared::TraceProtocol;

fn usage() -> ExitCode {
    eprintln!(
        "usage: trace_engine <auto|trippy|system|system:TOOL> <target-ip> [--grace-ms N] \
         [--deadline-ms N] [--max-ttl N] [--rounds N] [--protocol icmp|udp|tcp]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(engine), Some(target)) = (args.first(), args.get(1)) else {
        return usage();
    };
    let Ok(addr) = target.parse::<IpAddr>() else {
        eprintln!("target must be an IP address: {target}");
        return usage();
    };
    let mut request = TraceRequest::new(addr, target.clone());
    let mut rest = args.iter().skip(2);
    while let Some(flag) = rest.next() {
        let Some(value) = rest.next() else {
            return usage();
        };
        let number = value.parse::<u64>().ok();
        match (flag.as_str(), number) {
            ("--grace-ms", Some(n)) => request.grace = Duration::from_millis(n),
            ("--deadline-ms", Some(n)) => request.deadline = Duration::from_millis(n),
            ("--max-ttl", Some(n)) => request.max_ttl = u8::try_from(n).unwrap_or(u8::MAX),
            ("--rounds", Some(n)) => request.rounds = u8::try_from(n).unwrap_or(u8::MAX),
            ("--protocol", _) => {
                request.protocol = match value.as_str() {
                    "icmp" => TraceProtocol::Icmp,
                    "udp" => TraceProtocol::Udp,
                    "tcp" => TraceProtocol::Tcp,
                    _ => return usage(),
                }
            }
            _ => return usage(),
        }
    }

    let started = Instant::now();
    let result: Result<(TraceOutcome, Vec<_>), _> = if engine == "auto" {
        trace_auto_platform(&request)
    } else {
        engine_named(engine).and_then(|e: Box<dyn Engine>| {
            e.check_available()
                .map_err(|reason| lineprobe_agent::Error::EngineUnavailable {
                    engine: e.kind().to_string(),
                    reason,
                })?;
            e.trace(&request).map(|o| (o, Vec::new()))
        })
    };
    let wall = started.elapsed();
    match result {
        Ok((outcome, fallbacks)) => {
            let json = serde_json::json!({
                "engine": outcome.engine.to_string(),
                "protocol": outcome.protocol,
                "reached": outcome.reached,
                "duration_ms": outcome.duration.as_secs_f64() * 1000.0,
                "wall_ms": wall.as_secs_f64() * 1000.0,
                "hops": outcome.hops,
                "engine_fallbacks": fallbacks,
                "raw_format": outcome.raw_format,
                "raw_text": outcome.raw_text,
            });
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("trace failed: {e}");
            ExitCode::FAILURE
        }
    }
}
