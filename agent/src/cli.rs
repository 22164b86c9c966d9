use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::Error;
use crate::agent::{Agent, AgentOptions, ProbeOutcome};
use crate::config::AgentConfig;
use crate::probe::SharedTracer;

/// LineProbe probe agent: traces the route to the internet and reports it
/// together with the line's declared province, city, carrier and account.
#[derive(Debug, Parser)]
#[command(name = "lineprobe-agent", version, about, long_about = None)]
pub struct Cli {
    /// Agent configuration (TOML).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Folder for the install id, consent record, spool and state.
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Collector endpoint URL; repeat it to try several in order. Replaces
    /// the configured list.
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint: Vec<String>,
    /// Lab use only: do not verify the collector's TLS certificate.
    #[arg(long, global = true)]
    pub insecure_skip_verify: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// What the agent can be asked to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace the route to TARGET and print the hops.
    Trace {
        /// Host name or address to trace to.
        target: String,
        /// Trace engine: auto, trippy, unprivileged, windows-icmp or system.
        #[arg(long, default_value = "auto")]
        engine: String,
        /// Print the trace as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run one probe: trace, collect device facts, submit (or spool) the report.
    Probe {
        /// Print the report instead of sending it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run as a daemon: a probe every configured interval, the spool drained in between.
    Run,
    /// Show consent, last probe, spool depth and the last endpoint results.
    Status,
    /// Record or revoke the user's consent to tracing and sending.
    Consent {
        /// Record that the user agreed (time and consent text version).
        #[arg(long, conflicts_with = "revoke")]
        accept: bool,
        /// Stop all sending and delete the spool.
        #[arg(long)]
        revoke: bool,
    },
}

/// The engines the CLI traces with, best first.
fn default_tracer() -> SharedTracer {
    Arc::new(crate::engines_for_platform())
}

/// Runs the agent with parsed arguments, printing to stdout.
pub fn run(cli: &Cli) -> Result<(), Error> {
    run_with(cli, default_tracer(), &mut std::io::stdout().lock())
}

fn write_err(source: std::io::Error) -> Error {
    Error::Io {
        what: "cannot write the output".to_owned(),
        source,
    }
}

/// `probe`: one probe, then — when it got through — whatever waited in the
/// spool too, so that a probe run from cron or a scheduled task delivers it
/// without the daemon.
fn probe(
    agent: &Agent,
    runtime: &tokio::runtime::Runtime,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let outcome = runtime.block_on(agent.probe_once())?;
    writeln!(out, "{outcome}").map_err(write_err)?;
    if matches!(outcome, ProbeOutcome::Delivered { .. }) {
        let drained = runtime.block_on(agent.flush_spool())?;
        if drained.delivered + drained.refused + drained.waiting > 0 {
            writeln!(
                out,
                "spool: {} delivered, {} refused as invalid, {} still waiting",
                drained.delivered, drained.refused, drained.waiting
            )
            .map_err(write_err)?;
        }
    }
    Ok(())
}

/// Runs the agent with parsed arguments, tracing with `tracer` and printing
/// to `out`: what [`run`] does, for hosts and tests that bring their own.
pub fn run_with(cli: &Cli, tracer: SharedTracer, out: &mut dyn Write) -> Result<(), Error> {
    if cli.insecure_skip_verify {
        eprintln!(
            "lineprobe-agent: warning: --insecure-skip-verify is for lab use only: the \
             collector's certificate is NOT checked, anyone on the path can read and change \
             reports"
        );
    }
    let config = match &cli.config {
        Some(path) => AgentConfig::load(path)?,
        None => AgentConfig::default(),
    };
    let options = AgentOptions {
        config,
        state_dir: cli.state_dir.clone(),
        endpoints: cli.endpoint.clone(),
        insecure_skip_verify: cli.insecure_skip_verify,
    };
    let agent = Agent::new(options, tracer)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            what: "cannot start the async runtime".to_owned(),
            source,
        })?;
    match &cli.command {
        Command::Trace {
            target,
            engine,
            json,
        } => {
            let trace = runtime.block_on(agent.trace(Some(target), Some(engine)))?;
            if *json {
                let text = serde_json::to_string_pretty(&trace).map_err(|e| Error::Io {
                    what: "cannot encode the trace".to_owned(),
                    source: std::io::Error::other(e),
                })?;
                writeln!(out, "{text}").map_err(write_err)?;
            } else {
                write_trace(out, &trace).map_err(write_err)?;
            }
        }
        Command::Probe { dry_run: true } => {
            let report = runtime.block_on(agent.make_report())?;
            writeln!(out, "{}", report.to_json_pretty()?).map_err(write_err)?;
        }
        Command::Probe { dry_run: false } => probe(&agent, &runtime, out)?,
        Command::Run => {
            runtime.block_on(agent.run(shutdown_signal()))?;
            writeln!(out, "stopped").map_err(write_err)?;
        }
        Command::Status => {
            write!(out, "{}", agent.status()?).map_err(write_err)?;
        }
        Command::Consent { accept: true, .. } => {
            let record = agent.accept_consent()?;
            writeln!(
                out,
                "consent recorded at {} (text version {})",
                record.accepted_at.to_rfc3339(),
                record.text_version
            )
            .map_err(write_err)?;
        }
        Command::Consent { revoke: true, .. } => {
            let deleted = agent.revoke_consent()?;
            writeln!(
                out,
                "consent revoked: nothing will be traced or sent; {deleted} spooled report(s) deleted"
            )
            .map_err(write_err)?;
        }
        Command::Consent { .. } => match agent.consent()? {
            Some(c) => writeln!(
                out,
                "consent given at {} (text version {})",
                c.accepted_at.to_rfc3339(),
                c.text_version
            )
            .map_err(write_err)?,
            None => writeln!(
                out,
                "consent not given; run `lineprobe-agent consent --accept`"
            )
            .map_err(write_err)?,
        },
    }
    Ok(())
}

fn write_trace(out: &mut dyn Write, trace: &lineprobe_shared::ReportTrace) -> std::io::Result<()> {
    let addr = trace
        .target_addr
        .map(|a| format!(" ({a})"))
        .unwrap_or_default();
    writeln!(
        out,
        "trace to {}{addr}, {} via {}, {} ms",
        trace.target, trace.protocol, trace.engine, trace.duration_ms
    )?;
    for fallback in &trace.engine_fallbacks {
        writeln!(out, "  not used: {}: {}", fallback.engine, fallback.reason)?;
    }
    for hop in &trace.hops {
        let addrs = if hop.addrs.is_empty() {
            "*".to_owned()
        } else {
            hop.addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        };
        let rtts = hop
            .rtt_ms
            .iter()
            .map(|r| format!("{r:.1} ms"))
            .collect::<Vec<_>>()
            .join("  ");
        writeln!(out, "{:>3}  {addrs}  {rtts}", hop.ttl)?;
    }
    if let Some(raw) = &trace.raw_text
        && trace.hops.is_empty()
    {
        writeln!(out, "{raw}")?;
    }
    Ok(())
}

/// Ctrl-C, or SIGTERM where there is one (service managers send it).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Parses `args`, runs, and turns the outcome into an exit code with the
/// error on stderr: what the binary's `main` calls.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    init_logging();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lineprobe-agent: {e}");
            ExitCode::from(2)
        }
    }
}

/// Logs to stderr; `RUST_LOG` sets the filter (default: warnings, and the
/// agent's own progress at info). Without it the daemon's warnings (a
/// probe that fails, a spool that cannot be written) went nowhere.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,lineprobe_agent=info"));
    // A host that installed its own subscriber keeps it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(lineprobe_shared::log_in_colour())
        .with_writer(std::io::stderr)
        .try_init();
}
