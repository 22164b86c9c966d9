fn main() -> std::process::ExitCode {
    lineprobe_collector::main_with_args(std::env::args_os())
}
