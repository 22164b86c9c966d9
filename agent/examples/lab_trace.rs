//! Test helper for the network lab: runs one trace engine to one target with
//! the default request and prints the outcome as JSON.
//!
//! ```text
//! cargo build --example lab_trace
//! lab_trace unprivileged|trippy|system|system:<tool>|windows-icmp 203.0.113.10 [--protocol udp] [--rounds 3]
//! ```
//!
//! The lab tests run it inside a network namespace as an unprivileged user;
//! the agent's own CLI will do the same job for real.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use lineprobe_agent::{Engine, TraceRequest};
use lineprobe_shared::TraceProtocol;

/// Runs one trace engine and prints the outcome as JSON.
#[derive(Debug, Parser)]
struct Args {
    /// The engine (`unprivileged`, `trippy`, `system`, `system:<tool>`, `windows-icmp`).
    engine: String,
    /// The target address.
    target: IpAddr,
    /// Probe protocol (`icmp`, `udp` or `tcp`); the default request's when absent.
    #[arg(long)]
    protocol: Option<String>,
    /// Rounds; the default request's when absent.
    #[arg(long)]
    rounds: Option<u8>,
    /// Last TTL; the default request's when absent.
    #[arg(long)]
    max_ttl: Option<u8>,
    /// Grace period in milliseconds; the default request's when absent.
    #[arg(long)]
    grace_ms: Option<u64>,
    /// Deadline of the whole trace in milliseconds; the default request's
    /// when absent.
    #[arg(long)]
    deadline_ms: Option<u64>,
}

fn engine(name: &str) -> Result<Box<dyn Engine>, String> {
    lineprobe_agent::engine_named(name).map_err(|e| e.to_string())
}

fn protocol(name: &str) -> Result<TraceProtocol, String> {
    match name {
        "icmp" => Ok(TraceProtocol::Icmp),
        "udp" => Ok(TraceProtocol::Udp),
        "tcp" => Ok(TraceProtocol::Tcp),
        _ => Err(format!(
            "unknown protocol `{name}`; expected icmp, udp or tcp"
        )),
    }
}

fn run(args: &Args) -> Result<serde_json::Value, String> {
    let engine = engine(&args.engine)?;
    engine.check_available()?;
    let mut request = TraceRequest::new(args.target, args.target.to_string());
    if let Some(name) = &args.protocol {
        request.protocol = protocol(name)?;
    }
    if let Some(rounds) = args.rounds {
        request.rounds = rounds;
    }
    if let Some(max_ttl) = args.max_ttl {
        request.max_ttl = max_ttl;
    }
    if let Some(ms) = args.grace_ms {
        request.grace = Duration::from_millis(ms);
    }
    if let Some(ms) = args.deadline_ms {
        request.deadline = Duration::from_millis(ms);
    }
    let outcome = engine.trace(&request).map_err(|e| e.to_string())?;
    Ok(serde_json::json!({
        "engine": outcome.engine.to_string(),
        "protocol": outcome.protocol,
        "reached": outcome.reached,
        "duration_ms": u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX),
        "hops": outcome.hops,
    }))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lab_trace: {e}");
            ExitCode::FAILURE
        }
    }
}
