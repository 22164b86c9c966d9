// mimalloc instead of glibc malloc: the pipeline allocates and copies many
// small values per report (decoded reports, resolved facts, findings, JSON
// documents) on every worker thread, and glibc's malloc and free were about
// a third of the pipeline's own CPU (`perf` during
// `cargo bench -p lineprobe-sync --bench pipeline`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    lineprobe_sync::main_with_args(std::env::args_os())
}
