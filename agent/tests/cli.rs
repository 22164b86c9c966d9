use clap::CommandFactory;
use lineprobe_agent::Cli;

#[test]
fn help_lists_every_planned_subcommand() {
    let help = Cli::command().render_long_help().to_string();
    for sub in ["trace", "probe", "run", "status", "consent"] {
        assert!(help.contains(sub), "--help does not list `{sub}`:\n{help}");
    }
    Cli::command().debug_assert();
}

#[test]
fn unbuilt_subcommand_says_which_issue_tracks_it() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lineprobe-agent"))
        .args(["status"])
        .output()
        .expect("run lineprobe-agent");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not built yet") && err.contains("#4"), "{err}");
}
