//! How the programs log on standard error.

/// True when standard error is a terminal and `NO_COLOR` is not set: a
/// person is reading. A service manager's journal or a log file would keep
/// the escape codes as text.
#[must_use]
pub fn log_in_colour() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none()
}

/// Logs to standard error, coloured for a person ([`log_in_colour`]);
/// `RUST_LOG` sets the filter, `default_filter` applies without it (say,
/// warnings and the program's own progress at info). A host that installed
/// its own subscriber keeps it.
pub fn log_to_stderr(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(log_in_colour())
        .with_writer(std::io::stderr)
        .try_init();
}
