//! Running the agent as a system service.
//!
//! On Windows `service install` registers the agent with the Service
//! Control Manager: it starts with the machine as `LocalSystem`, runs the
//! daemon (`run`) with the configuration and state folder given at install
//! time, is restarted after a failure, and stops when the SCM says so. The
//! SCM starts `lineprobe-agent … service run`, which connects to it
//! (`windows.rs`). A service has no console, so it logs to `agent.log` in
//! its state folder. On Linux the daemon runs under systemd instead
//! (`config/lineprobe-agent.service`); `service` there says so.
//!
//! What does not need Windows to check lives here: what an installation
//! records, where it keeps its state, and the log file.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::config::AgentConfig;
use crate::{Cli, Error, StateDir, read_consent};

/// The service's name in the Service Control Manager.
pub const SERVICE_NAME: &str = "LineProbeAgent";

/// The name people see in the Services console.
pub const SERVICE_DISPLAY_NAME: &str = "LineProbe probe agent";

/// What the Services console says the service does.
pub const SERVICE_DESCRIPTION: &str = "Traces the route from this computer to the internet \
    every configured interval and reports it, with the line's declared province, city and \
    carrier, to the broadband carrier's LineProbe collectors.";

/// The service's log file, in its state folder.
pub const SERVICE_LOG_FILE: &str = "agent.log";

/// Past this size the log is moved aside (one older file is kept) when
/// the service starts.
pub const SERVICE_LOG_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// What `service install` registers: the program and the arguments the
/// Service Control Manager starts it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePlan {
    /// The agent's executable.
    pub executable: PathBuf,
    /// Its configuration file (absolute: a service starts in the system
    /// folder).
    pub config: PathBuf,
    /// Its state folder (absolute).
    pub state_dir: PathBuf,
    /// Endpoints given on the command line, which replace the configured
    /// ones in the service too.
    pub endpoints: Vec<String>,
}

impl ServicePlan {
    /// Plans the installation the command line asks for: the configuration
    /// must be given, exist and be valid; the state folder is `--state-dir`,
    /// else the configuration's when absolute, else `default_state_dir`.
    /// Both are made absolute against `cwd`.
    pub fn from_cli(
        cli: &Cli,
        executable: PathBuf,
        cwd: &Path,
        default_state_dir: Option<PathBuf>,
    ) -> Result<Self, Error> {
        if cli.insecure_skip_verify {
            return Err(Error::Config {
                key: "--insecure-skip-verify".to_owned(),
                reason: "is for lab use only and is not installed into a service, which would \
                         send reports without checking whom to; pin the collector's CA in the \
                         configuration (`endpoints.ca_file`) instead"
                    .to_owned(),
            });
        }
        let config = cli.config.as_deref().ok_or_else(|| Error::Config {
            key: "--config".to_owned(),
            reason: "a service reads its configuration from a file: give --config FILE (the \
                     environment of a service is not the console's)"
                .to_owned(),
        })?;
        let config = cwd.join(config);
        // Checked now, at the console: a service that cannot start says
        // so only in its log.
        let loaded = AgentConfig::load(&config)?;
        // The command line's folder, else the configuration's when it is
        // absolute (a relative one would be under the system folder the
        // service starts in), else the default.
        let state_dir = cli
            .state_dir
            .clone()
            .or(loaded.state_dir.filter(|d| d.is_absolute()))
            .or(default_state_dir)
            .ok_or_else(|| Error::Config {
                key: "--state-dir".to_owned(),
                reason: "give the service's state folder with --state-dir DIR".to_owned(),
            })?;
        Ok(Self {
            executable,
            config,
            state_dir: cwd.join(state_dir),
            endpoints: cli.endpoint.clone(),
        })
    }

    /// The arguments the Service Control Manager starts the executable
    /// with.
    pub fn launch_arguments(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--config".into(),
            self.config.clone().into_os_string(),
            "--state-dir".into(),
            self.state_dir.clone().into_os_string(),
        ];
        for endpoint in &self.endpoints {
            args.push("--endpoint".into());
            args.push(endpoint.into());
        }
        args.push("service".into());
        args.push("run".into());
        args
    }

    /// A note for the installer when nothing will be traced yet: the
    /// service waits for consent recorded in its own state folder.
    pub fn consent_note(&self) -> Result<Option<String>, Error> {
        let state = StateDir::open(&self.state_dir)?;
        Ok(read_consent(&state)?.is_none().then(|| {
            format!(
                "consent is not recorded in {dir}: the service traces and sends nothing until \
                 `lineprobe-agent --config {config} --state-dir {dir} consent --accept` is run \
                 (as Administrator)",
                dir = self.state_dir.display(),
                config = self.config.display()
            )
        }))
    }
}

/// The state folder of a service when none is given: `LineProbe\agent` in
/// Windows' `ProgramData` folder (`programdata`: that variable's value).
pub fn default_service_state_dir(programdata: Option<OsString>) -> Option<PathBuf> {
    programdata
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(p).join("LineProbe").join("agent"))
}

/// Opens the service's log in `state_dir` for appending, first moving a
/// log larger than [`SERVICE_LOG_MAX_BYTES`] aside to `agent.log.1`
/// (replacing the one before).
pub fn open_service_log(state_dir: &Path) -> std::io::Result<File> {
    let path = state_dir.join(SERVICE_LOG_FILE);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > SERVICE_LOG_MAX_BYTES) {
        std::fs::rename(&path, state_dir.join(format!("{SERVICE_LOG_FILE}.1")))?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// `service …` where there is no Windows service manager.
#[cfg(not(windows))]
pub(crate) fn unsupported() -> Error {
    Error::Config {
        key: "service".to_owned(),
        reason: "Windows services exist only on Windows; on Linux run `lineprobe-agent --config \
                 FILE run` under systemd (config/lineprobe-agent.service is a unit to start from)"
            .to_owned(),
    }
}

#[cfg(windows)]
mod windows;

#[cfg(windows)]
pub(crate) use windows::{install, run_as_service, uninstall};

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn config_file(dir: &Path) -> PathBuf {
        let path = dir.join("agent.toml");
        std::fs::write(
            &path,
            "[endpoints]\nurls = [\"https://collector.example.net/r\"]\n",
        )
        .expect("write config");
        path
    }

    #[test]
    fn a_plan_records_absolute_paths_and_starts_the_daemon_through_the_scm() {
        let dir = tempfile::tempdir().expect("tempdir");
        config_file(dir.path());
        let cli = Cli::parse_from([
            "lineprobe-agent",
            "--config",
            "agent.toml",
            "--endpoint",
            "https://198.51.100.7/r",
            "service",
            "install",
        ]);
        // %ProgramData% as each platform spells an absolute folder.
        let programdata = if cfg!(windows) {
            r"C:\ProgramData"
        } else {
            "/programdata"
        };
        let default = default_service_state_dir(Some(OsString::from(programdata)));
        let plan = ServicePlan::from_cli(&cli, PathBuf::from("/bin/agent"), dir.path(), default)
            .expect("plan");
        assert_eq!(plan.config, dir.path().join("agent.toml"));
        assert_eq!(
            plan.state_dir,
            Path::new(programdata).join("LineProbe").join("agent")
        );
        let args = plan.launch_arguments();
        // What the SCM starts parses as the daemon's service entry, with
        // the same configuration, state and endpoints.
        let started = Cli::parse_from(
            std::iter::once(OsString::from("lineprobe-agent")).chain(args.iter().cloned()),
        );
        assert_eq!(started.config.as_deref(), Some(plan.config.as_path()));
        assert_eq!(started.state_dir.as_deref(), Some(plan.state_dir.as_path()));
        assert_eq!(started.endpoint, ["https://198.51.100.7/r"]);
        assert!(matches!(
            started.command,
            crate::Command::Service {
                action: crate::ServiceAction::Run
            }
        ));

        // A state folder given wins, made absolute too.
        let cli = Cli::parse_from([
            "lineprobe-agent",
            "--config",
            "agent.toml",
            "--state-dir",
            "state",
            "service",
            "install",
        ]);
        let plan = ServicePlan::from_cli(&cli, PathBuf::from("a"), dir.path(), None).expect("plan");
        assert_eq!(plan.state_dir, dir.path().join("state"));
    }

    #[test]
    fn a_plan_refuses_what_a_service_cannot_run_with() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = |args: &[&str]| {
            let cli = Cli::parse_from(
                ["lineprobe-agent"]
                    .iter()
                    .chain(args)
                    .chain(&["service", "install"]),
            );
            ServicePlan::from_cli(&cli, PathBuf::from("a"), dir.path(), None)
                .expect_err("refused")
                .to_string()
        };
        assert!(plan(&[]).contains("--config"));
        assert!(plan(&["--config", "missing.toml"]).contains("missing.toml"));
        config_file(dir.path());
        assert!(plan(&["--config", "agent.toml"]).contains("--state-dir"));
        assert!(
            plan(&[
                "--config",
                "agent.toml",
                "--state-dir",
                "s",
                "--insecure-skip-verify"
            ])
            .contains("lab use only")
        );
        std::fs::write(dir.path().join("bad.toml"), "[endpoints]\nnope = 1\n").expect("write");
        assert!(plan(&["--config", "bad.toml", "--state-dir", "s"]).contains("nope"));
    }

    #[test]
    fn the_installer_hears_when_consent_is_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = ServicePlan {
            executable: PathBuf::from("a"),
            config: dir.path().join("agent.toml"),
            state_dir: dir.path().join("state"),
            endpoints: Vec::new(),
        };
        let note = plan.consent_note().expect("read").expect("a note");
        assert!(
            note.contains("consent --accept") && note.contains("state"),
            "{note}"
        );
        let state = StateDir::open(&plan.state_dir).expect("state");
        crate::accept_consent(&state, "v1").expect("consent");
        assert_eq!(plan.consent_note().expect("read"), None);
    }

    #[test]
    fn the_default_state_folder_is_under_programdata() {
        assert_eq!(default_service_state_dir(None), None);
        assert_eq!(default_service_state_dir(Some(OsString::new())), None);
        assert_eq!(
            default_service_state_dir(Some(OsString::from("C:/ProgramData"))),
            Some(PathBuf::from("C:/ProgramData/LineProbe/agent"))
        );
    }

    #[test]
    fn the_log_is_appended_to_and_moved_aside_when_large() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join(SERVICE_LOG_FILE);
        std::io::Write::write_all(&mut open_service_log(dir.path()).expect("open"), b"one\n")
            .expect("write");
        std::io::Write::write_all(&mut open_service_log(dir.path()).expect("open"), b"two\n")
            .expect("write");
        assert_eq!(std::fs::read_to_string(&log).expect("read"), "one\ntwo\n");
        let big = vec![b'x'; usize::try_from(SERVICE_LOG_MAX_BYTES).expect("fits") + 1];
        std::fs::write(&log, &big).expect("write");
        drop(open_service_log(dir.path()).expect("open"));
        assert_eq!(std::fs::metadata(&log).expect("new log").len(), 0);
        let old = dir.path().join(format!("{SERVICE_LOG_FILE}.1"));
        assert_eq!(std::fs::read(old).expect("old log"), big);
    }

    /// The systemd unit shipped for Linux starts a command the CLI takes.
    #[test]
    fn the_systemd_unit_runs_the_daemon() {
        let unit = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/lineprobe-agent.service"),
        )
        .expect("unit file");
        let exec = unit
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("ExecStart");
        let cli = Cli::try_parse_from(exec.split_whitespace()).expect("parses");
        assert!(matches!(cli.command, crate::Command::Run), "{exec}");
        assert!(cli.config.is_some() && cli.state_dir.is_some(), "{exec}");
    }
}
