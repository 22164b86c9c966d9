//! The Windows service: installing it with the Service Control Manager,
//! removing it, and running under it.

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

use super::{
    SERVICE_DESCRIPTION, SERVICE_DISPLAY_NAME, SERVICE_NAME, ServicePlan,
    default_service_state_dir, open_service_log,
};
use crate::{Cli, Error, StateDir};

/// `ERROR_SERVICE_DOES_NOT_EXIST`.
const SERVICE_DOES_NOT_EXIST: i32 = 1060;
/// `ERROR_FAILED_SERVICE_CONTROLLER_CONNECT`: started from a console.
const NOT_STARTED_BY_SCM: i32 = 1063;
/// `ERROR_SERVICE_EXISTS`.
const SERVICE_EXISTS: i32 = 1073;

fn scm_error(what: &str, error: windows_service::Error) -> Error {
    let source = match error {
        windows_service::Error::Winapi(e) => e,
        other => std::io::Error::other(other.to_string()),
    };
    Error::Io {
        what: what.to_owned(),
        source,
    }
}

fn raw_os_error(error: &windows_service::Error) -> Option<i32> {
    match error {
        windows_service::Error::Winapi(e) => e.raw_os_error(),
        _ => None,
    }
}

/// `service install`: registers the service (automatic start, restarted
/// after a failure), makes its state folder readable by SYSTEM and the
/// Administrators only (it holds the probe's private key), and starts it
/// when `start` is set. Needs an elevated console.
pub(crate) fn install(cli: &Cli, start: bool, out: &mut dyn Write) -> Result<(), Error> {
    let executable = std::env::current_exe().map_err(|source| Error::Io {
        what: "cannot find the agent's own executable".to_owned(),
        source,
    })?;
    let cwd = std::env::current_dir().map_err(|source| Error::Io {
        what: "cannot read the current folder".to_owned(),
        source,
    })?;
    let plan = ServicePlan::from_cli(
        cli,
        executable,
        &cwd,
        default_service_state_dir(std::env::var_os("ProgramData")),
    )?;
    StateDir::open(&plan.state_dir)?;
    restrict_to_system(&plan.state_dir)?;
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .map_err(|e| {
        scm_error(
            "cannot open the Service Control Manager (run as Administrator)",
            e,
        )
    })?;
    let info = ServiceInfo {
        name: OsString::from(SERVICE_NAME),
        display_name: OsString::from(SERVICE_DISPLAY_NAME),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: plan.executable.clone(),
        launch_arguments: plan.launch_arguments(),
        dependencies: Vec::new(),
        // LocalSystem: raw sockets need it (or Administrators).
        account_name: None,
        account_password: None,
    };
    let access = ServiceAccess::CHANGE_CONFIG | ServiceAccess::START;
    let service = manager.create_service(&info, access).map_err(|e| {
        if raw_os_error(&e) == Some(SERVICE_EXISTS) {
            Error::Config {
                key: "service install".to_owned(),
                reason: format!(
                    "the service {SERVICE_NAME} is installed already; run `lineprobe-agent \
                     service uninstall` first to install it with other settings"
                ),
            }
        } else {
            scm_error("cannot create the service", e)
        }
    })?;
    service
        .set_description(SERVICE_DESCRIPTION)
        .map_err(|e| scm_error("cannot describe the service", e))?;
    // Restarted a minute after it fails (twice, then every time after a
    // day without failures): a probe nobody watches must not stop for good.
    let restart = ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_mins(1),
    };
    service
        .update_failure_actions(ServiceFailureActions {
            reset_period: ServiceFailureResetPeriod::After(Duration::from_hours(24)),
            reboot_msg: None,
            command: None,
            actions: Some(vec![restart.clone(), restart.clone(), restart]),
        })
        .map_err(|e| scm_error("cannot set the service's restart on failure", e))?;
    service
        .set_failure_actions_on_non_crash_failures(true)
        .map_err(|e| scm_error("cannot set the service's restart on failure", e))?;
    writeln!(
        out,
        "installed service {SERVICE_NAME}: {} with {} (state in {})",
        plan.executable.display(),
        plan.config.display(),
        plan.state_dir.display()
    )
    .map_err(write_err)?;
    if let Some(note) = plan.consent_note()? {
        writeln!(out, "note: {note}").map_err(write_err)?;
    }
    if start {
        service
            .start::<&str>(&[])
            .map_err(|e| scm_error("cannot start the service", e))?;
        writeln!(out, "started").map_err(write_err)?;
    }
    Ok(())
}

/// `service uninstall`: stops the service and removes it.
pub(crate) fn uninstall(out: &mut dyn Write) -> Result<(), Error> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(|e| {
            scm_error(
                "cannot open the Service Control Manager (run as Administrator)",
                e,
            )
        })?;
    let access = ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE;
    let service = match manager.open_service(SERVICE_NAME, access) {
        Ok(service) => service,
        Err(e) if raw_os_error(&e) == Some(SERVICE_DOES_NOT_EXIST) => {
            writeln!(out, "service {SERVICE_NAME} is not installed").map_err(write_err)?;
            return Ok(());
        }
        Err(e) => return Err(scm_error("cannot open the service", e)),
    };
    // Marked for deletion now; removed once stopped and every handle to
    // it is closed.
    service
        .delete()
        .map_err(|e| scm_error("cannot delete the service", e))?;
    let running = service
        .query_status()
        .map_err(|e| scm_error("cannot query the service", e))?
        .current_state
        != ServiceState::Stopped;
    if running {
        service
            .stop()
            .map_err(|e| scm_error("cannot stop the service", e))?;
    }
    drop(service);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match manager.open_service(SERVICE_NAME, ServiceAccess::QUERY_STATUS) {
            Err(e) if raw_os_error(&e) == Some(SERVICE_DOES_NOT_EXIST) => {
                writeln!(out, "removed service {SERVICE_NAME}").map_err(write_err)?;
                return Ok(());
            }
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    }
    writeln!(
        out,
        "service {SERVICE_NAME} is marked for removal; Windows removes it once it has stopped \
         (or at the next restart)"
    )
    .map_err(write_err)
}

/// Grants the state folder to SYSTEM and the Administrators only, nothing
/// inherited: under `ProgramData` every user could otherwise read the
/// probe's private key and sign reports in its name.
fn restrict_to_system(dir: &Path) -> Result<(), Error> {
    let output = std::process::Command::new("icacls")
        .arg(dir)
        .args([
            "/inheritance:r",
            "/grant:r",
            "*S-1-5-18:(OI)(CI)F",
            "*S-1-5-32-544:(OI)(CI)F",
        ])
        .output()
        .map_err(|source| Error::Io {
            what: "cannot run icacls to protect the state folder".to_owned(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::State {
        path: dir.display().to_string(),
        reason: format!(
            "icacls could not limit it to SYSTEM and Administrators: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    })
}

fn write_err(source: std::io::Error) -> Error {
    Error::Io {
        what: "cannot write the output".to_owned(),
        source,
    }
}

/// The command line the service was started with, for the service's main
/// function (which the dispatcher calls with the SCM's start parameters
/// only).
static SERVICE_CLI: OnceLock<Cli> = OnceLock::new();

/// `service run`: connects to the Service Control Manager and runs the
/// daemon until it says stop. Returns once the service has stopped.
pub(crate) fn run_as_service(cli: Cli) -> Result<(), Error> {
    let _ = SERVICE_CLI.set(cli);
    service_dispatcher::start(SERVICE_NAME, ffi_service_main).map_err(|e| {
        if raw_os_error(&e) == Some(NOT_STARTED_BY_SCM) {
            Error::Config {
                key: "service run".to_owned(),
                reason: "is what the Service Control Manager starts; from a console, run \
                         `lineprobe-agent --config FILE run`, or start the installed service \
                         with `sc start LineProbeAgent`"
                    .to_owned(),
            }
        } else {
            scm_error("cannot connect to the Service Control Manager", e)
        }
    })
}

define_windows_service!(ffi_service_main, service_main);

fn service_main(_arguments: Vec<OsString>) {
    let Some(cli) = SERVICE_CLI.get() else {
        return;
    };
    // No console: the log goes to the state folder.
    if let Some(dir) = &cli.state_dir
        && let Ok(file) = open_service_log(dir)
    {
        let filter = tracing_subscriber_filter();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(Mutex::new(file))
            .try_init();
    }
    if let Err(e) = serve(cli) {
        tracing::error!(error = %e, "the service stopped with an error");
    }
}

fn tracing_subscriber_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,lineprobe_agent=info"))
}

fn status(state: ServiceState, exit_code: ServiceExitCode) -> ServiceStatus {
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: if state == ServiceState::Running {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        },
        exit_code,
        checkpoint: 0,
        wait_hint: if state == ServiceState::StopPending {
            // The daemon returns promptly; a trace still running on its
            // own thread is given the CLI's grace period.
            Duration::from_secs(10)
        } else {
            Duration::ZERO
        },
        process_id: None,
    }
}

/// Runs the daemon under the SCM: Running once its control handler is in,
/// Stopped (with the error, if any) when the daemon has returned.
fn serve(cli: &Cli) -> Result<(), Error> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop_tx = Mutex::new(Some(stop_tx));
    let handler = move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            if let Some(tx) = stop_tx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            {
                let _ = tx.send(());
            }
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let handle = service_control_handler::register(SERVICE_NAME, handler)
        .map_err(|e| scm_error("cannot register the service's control handler", e))?;
    handle
        .set_service_status(status(ServiceState::Running, ServiceExitCode::Win32(0)))
        .map_err(|e| scm_error("cannot report the service running", e))?;
    tracing::info!("service started");
    let shutdown = async move {
        // A dropped sender (the handler gone) stops the daemon too.
        let _ = stop_rx.await;
    };
    let mut sink = std::io::sink();
    let result = crate::cli::run_service_daemon(cli, &mut sink, shutdown);
    let exit = match &result {
        Ok(()) => ServiceExitCode::Win32(0),
        Err(_) => ServiceExitCode::ServiceSpecific(2),
    };
    let _ = handle.set_service_status(status(ServiceState::StopPending, exit));
    tracing::info!("service stopping");
    let _ = handle.set_service_status(status(ServiceState::Stopped, exit));
    result
}
