use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::Error;

/// LineProbe collector: receives probe reports over HTTPS, stores them
/// durably and lets the internal side pull them one way.
#[derive(Debug, Parser)]
#[command(name = "lineprobe-collector", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What the collector can be asked to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the public ingest listener and the export listener.
    Serve {
        /// Collector configuration (TOML); embedded defaults without it.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Public listener address (probes), overriding the config.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Export listener address (the internal puller), overriding the config.
        #[arg(long, value_name = "ADDR")]
        export_listen: Option<String>,
        /// Folder for the staging store and generated certificates.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Serve plain HTTP instead of HTTPS (local testing only).
        #[arg(long)]
        plain_http: bool,
    },
    /// Validate a configuration file and print what is wrong with it.
    CheckConfig {
        /// Collector configuration (TOML).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

/// Runs the collector with parsed arguments.
pub fn run(cli: &Cli) -> Result<(), Error> {
    let command = match cli.command {
        Command::Serve { .. } => "serve",
        Command::CheckConfig { .. } => "check-config",
    };
    Err(Error::NotBuiltYet { command, issue: 3 })
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
            eprintln!("lineprobe-collector: {e}");
            ExitCode::from(2)
        }
    }
}
