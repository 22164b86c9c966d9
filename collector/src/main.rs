// mimalloc instead of glibc malloc: ingest allocates per request on every
// worker thread (decode, envelope, response), and glibc's arena locks and
// consolidation cost about a tenth of the server's CPU under load
// (`cargo bench -p lineprobe-collector --bench ingest`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    lineprobe_collector::main_with_args(std::env::args_os())
}
