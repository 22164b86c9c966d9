use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::{CollectorConfig, Error, Overrides};

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
        listen: Option<SocketAddr>,
        /// Export listener address (the internal puller), overriding the config.
        #[arg(long, value_name = "ADDR")]
        export_listen: Option<SocketAddr>,
        /// Folder for the staging store and generated certificates.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Serve plain HTTP instead of HTTPS on both listeners (local testing only).
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
    let env = std::env::vars();
    match &cli.command {
        Command::Serve {
            config,
            listen,
            export_listen,
            data_dir,
            plain_http,
        } => {
            let overrides = Overrides {
                listen: *listen,
                export_listen: *export_listen,
                data_dir: data_dir.clone(),
                plain_http: *plain_http,
            };
            let config = CollectorConfig::load(config.as_deref(), env, &overrides)?;
            crate::server::run_until_signal(&config)
        }
        Command::CheckConfig { config } => {
            let loaded = CollectorConfig::load(Some(config), env, &Overrides::default())?;
            println!(
                "{}: valid (node {}, public {}{}, export {}{})",
                config.display(),
                loaded.node_id,
                loaded.public.listen,
                if loaded.public.plain_http {
                    " plain HTTP"
                } else {
                    " HTTPS"
                },
                loaded.export.listen,
                if loaded.export.token.is_empty() {
                    ", export disabled: no token"
                } else {
                    ""
                },
            );
            Ok(())
        }
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
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lineprobe-collector: {e}");
            ExitCode::from(2)
        }
    }
}
