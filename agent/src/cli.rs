use std::ffi::OsString;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

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
    /// Install, remove or run the agent as a Windows service (Windows only;
    /// on Linux run `run` under systemd).
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
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

/// What `service` does.
#[derive(Debug, Subcommand)]
pub enum ServiceAction {
    /// Install the service: it starts with Windows as `LocalSystem` and runs
    /// the daemon with this --config, --state-dir (default
    /// %ProgramData%\LineProbe\agent) and --endpoint list. Run as
    /// Administrator.
    Install {
        /// Start it once installed.
        #[arg(long)]
        start: bool,
    },
    /// Stop and remove the service.
    Uninstall,
    /// What the Service Control Manager starts (not for a console).
    #[command(hide = true)]
    Run,
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
    run_until(cli, tracer, out, shutdown_signal())
}

/// How long the process waits, once `run` has stopped, for a trace still
/// running on its own thread: a trace ends only at its deadline (up to an
/// hour), and a service manager stops a service that lingers the hard way.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// [`run_with`], with `shutdown` ending `run` instead of a signal.
fn run_until(
    cli: &Cli,
    tracer: SharedTracer,
    out: &mut dyn Write,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    if let Command::Service { action } = &cli.command {
        return service(cli, action, out);
    }
    run_command(cli, &cli.command, tracer, out, shutdown)
}

/// `service …`.
#[cfg(windows)]
fn service(cli: &Cli, action: &ServiceAction, out: &mut dyn Write) -> Result<(), Error> {
    match action {
        ServiceAction::Install { start } => crate::service::install(cli, *start, out),
        ServiceAction::Uninstall => crate::service::uninstall(out),
        ServiceAction::Run => crate::service::run_as_service(Cli {
            config: cli.config.clone(),
            state_dir: cli.state_dir.clone(),
            endpoint: cli.endpoint.clone(),
            insecure_skip_verify: cli.insecure_skip_verify,
            command: Command::Run,
        }),
    }
}

/// `service …` without a Windows service manager.
#[cfg(not(windows))]
fn service(_: &Cli, _: &ServiceAction, _: &mut dyn Write) -> Result<(), Error> {
    Err(crate::service::unsupported())
}

/// The daemon as a service runs it: `cli`'s settings, the platform's
/// engines, until `shutdown`.
#[cfg(windows)]
pub(crate) fn run_service_daemon(
    cli: &Cli,
    out: &mut dyn Write,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    run_command(cli, &Command::Run, default_tracer(), out, shutdown)
}

/// Runs `command` with `cli`'s settings.
fn run_command(
    cli: &Cli,
    command: &Command,
    tracer: SharedTracer,
    out: &mut dyn Write,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    if cli.insecure_skip_verify {
        eprintln!(
            "lineprobe-agent: warning: --insecure-skip-verify is for lab use only: the \
             collector's certificate is NOT checked, anyone on the path can read and change \
             reports"
        );
    }
    let config = match &cli.config {
        Some(path) => AgentConfig::load(path)?,
        None => AgentConfig::from_env()?,
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
    let result = execute(command, &agent, &runtime, out, shutdown);
    // Dropping the runtime would wait for the trace's blocking thread.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    result
}

fn execute(
    command: &Command,
    agent: &Agent,
    runtime: &tokio::runtime::Runtime,
    out: &mut dyn Write,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    match command {
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
        Command::Probe { dry_run: false } => probe(agent, runtime, out)?,
        Command::Run => {
            runtime.block_on(agent.run(shutdown))?;
            writeln!(out, "stopped").map_err(write_err)?;
        }
        Command::Status => {
            write!(out, "{}", agent.status()?).map_err(write_err)?;
        }
        // Handled before an agent is made (see `run_until`).
        Command::Service { .. } => {}
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
    // Warnings and the agent's own progress unless RUST_LOG says otherwise:
    // without a subscriber the daemon's warnings (a probe that fails, a
    // spool that cannot be written) went nowhere.
    // A service has no standard error: it logs to its state folder.
    if !matches!(
        cli.command,
        Command::Service {
            action: ServiceAction::Run
        }
    ) {
        lineprobe_shared::log_to_stderr("warn,lineprobe_agent=info");
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lineprobe-agent: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::mpsc::{Receiver, SyncSender};
    use std::time::Instant;

    use lineprobe_shared::TraceEngine;

    use super::*;
    use crate::{Engine, TraceOutcome, TraceRequest};

    /// A trace that runs until released (or 30 s), as one that hangs until
    /// its deadline does.
    #[derive(Debug)]
    struct Stuck {
        started: SyncSender<()>,
        release: Mutex<Receiver<()>>,
    }

    impl Engine for Stuck {
        fn kind(&self) -> TraceEngine {
            TraceEngine::Unprivileged
        }

        fn check_available(&self) -> Result<(), String> {
            Ok(())
        }

        fn trace(&self, _: &TraceRequest) -> Result<TraceOutcome, Error> {
            let _ = self.started.send(());
            let _ = self
                .release
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .recv_timeout(Duration::from_secs(30));
            Err(Error::TraceFailed {
                engine: "stuck".to_owned(),
                reason: "released".to_owned(),
            })
        }
    }

    #[test]
    fn run_exits_promptly_while_a_trace_is_still_running() {
        let state = tempfile::tempdir().expect("tempdir");
        let dir = state.path().to_str().expect("utf-8 path");
        let cli = |command: &str| {
            Cli::parse_from([
                "lineprobe-agent",
                "--state-dir",
                dir,
                "--endpoint",
                "https://127.0.0.1:9",
                command,
            ])
        };
        let (started_tx, started) = std::sync::mpsc::sync_channel(1);
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let engines: Vec<Box<dyn Engine>> = vec![Box::new(Stuck {
            started: started_tx,
            release: Mutex::new(release_rx),
        })];
        let tracer: SharedTracer = Arc::new(engines);
        let mut out = Vec::new();
        let accept =
            Cli::parse_from(["lineprobe-agent", "--state-dir", dir, "consent", "--accept"]);
        run_with(&accept, Arc::clone(&tracer), &mut out).expect("consent");

        // Shut down once the daemon's first trace has started.
        let shutdown = async move {
            tokio::task::spawn_blocking(move || started.recv())
                .await
                .expect("join")
                .expect("the trace starts");
        };
        let started_at = Instant::now();
        run_until(&cli("run"), tracer, &mut out, shutdown).expect("run");
        let took = started_at.elapsed();
        drop(release);
        assert!(took < Duration::from_secs(10), "took {took:?} to exit");
        assert!(String::from_utf8_lossy(&out).contains("stopped"));
    }
}
