use clap::CommandFactory;
use lineprobe_collector::Cli;

#[test]
fn help_lists_every_planned_subcommand() {
    let help = Cli::command().render_long_help().to_string();
    for sub in ["serve", "check-config"] {
        assert!(help.contains(sub), "--help does not list `{sub}`:\n{help}");
    }
    Cli::command().debug_assert();
}

#[test]
fn serve_help_lists_listener_overrides() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lineprobe-collector"))
        .args(["serve", "--help"])
        .output()
        .expect("run lineprobe-collector");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--export-listen",
        "--data-dir",
        "--plain-http",
        "--config",
    ] {
        assert!(help.contains(flag), "serve --help lacks {flag}:\n{help}");
    }
}
