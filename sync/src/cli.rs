use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::Error;

/// LineProbe internal side: pulls probe reports one way from the collectors
/// and judges each line's compliance; batch reports and the back office.
#[derive(Debug, Parser)]
#[command(name = "lineprobe-sync", version, about, long_about = None)]
pub struct Cli {
    /// Sync configuration (TOML); embedded defaults without it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Internal database URL (`sqlite://…` or `postgres://…`), overriding the config.
    #[arg(long, global = true, value_name = "URL")]
    pub database: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// What the internal side can be asked to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pull new reports from every configured collector into the internal database.
    Pull {
        /// Pull once and exit instead of every configured interval.
        #[arg(long)]
        once: bool,
    },
    /// Run the daemon: periodic pulls, the pipeline, scheduled reports and the back office.
    Run,
    /// Serve the compliance back office (web UI).
    Serve,
    /// Write the batch compliance report for a period.
    Report {
        /// day, week or month.
        #[arg(long, default_value = "day")]
        period: String,
    },
    /// Manage back-office users (add, passwd, disable).
    User {
        /// add, passwd or disable.
        action: String,
        /// The user name.
        name: String,
    },
    /// Read traceroute text: parse it, or find its first public hop.
    #[command(subcommand)]
    Trace(TraceCommand),
}

/// The trace tools.
#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// Parse traceroute output (any supported tool and language) and print its hops as JSON.
    Parse {
        /// The file to read; `-` or nothing reads standard input.
        file: Option<PathBuf>,
    },
    /// Find the first public hop of a traceroute output and classify every hop.
    FirstHop {
        /// The file to read; `-` or nothing reads standard input.
        file: Option<PathBuf>,
        /// Treat this CIDR as public (labs built on documentation ranges); repeatable.
        #[arg(long = "public-cidr", value_name = "CIDR")]
        public_cidrs: Vec<String>,
    },
}

/// Runs the internal side with parsed arguments, reading `stdin` where a
/// command reads standard input and writing results to `stdout`.
pub fn run(cli: &Cli, stdin: &mut dyn Read, stdout: &mut dyn Write) -> Result<(), Error> {
    match &cli.command {
        Command::Trace(TraceCommand::Parse { file }) => {
            crate::trace::parse(file.as_deref(), stdin, stdout)
        }
        Command::Trace(TraceCommand::FirstHop { file, public_cidrs }) => {
            crate::trace::first_hop(file.as_deref(), public_cidrs, stdin, stdout)
        }
        Command::Pull { .. } => Err(Error::NotBuiltYet {
            command: "pull",
            issue: 5,
        }),
        Command::Run => Err(Error::NotBuiltYet {
            command: "run",
            issue: 5,
        }),
        Command::Serve => Err(Error::NotBuiltYet {
            command: "serve",
            issue: 6,
        }),
        Command::Report { .. } => Err(Error::NotBuiltYet {
            command: "report",
            issue: 6,
        }),
        Command::User { .. } => Err(Error::NotBuiltYet {
            command: "user",
            issue: 6,
        }),
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
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match run(&cli, &mut std::io::stdin().lock(), &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stopped early (`| head`) is not a failure of ours.
        Err(Error::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lineprobe-sync: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
