//! Whether the programs colour their log on standard error.

/// True when standard error is a terminal and `NO_COLOR` is not set: a
/// person is reading. A service manager's journal or a log file would keep
/// the escape codes as text.
#[must_use]
pub fn log_in_colour() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none()
}
