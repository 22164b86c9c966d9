fn main() -> std::process::ExitCode {
    lineprobe_agent::main_with_args(std::env::args_os())
}
