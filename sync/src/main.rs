fn main() -> std::process::ExitCode {
    lineprobe_sync::main_with_args(std::env::args_os())
}
