use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::Error;

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

/// Runs the agent with parsed arguments.
pub fn run(cli: &Cli) -> Result<(), Error> {
    let command = match cli.command {
        Command::Trace { .. } => "trace",
        Command::Probe { .. } => "probe",
        Command::Run => "run",
        Command::Status => "status",
        Command::Consent { .. } => "consent",
    };
    Err(Error::NotBuiltYet { command, issue: 4 })
}

/// Parses `args`, runs, and turns the outcome into an exit code with the
/// error on stderr: what the binary's `main` calls.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lineprobe-agent: {e}");
            ExitCode::from(2)
        }
    }
}
