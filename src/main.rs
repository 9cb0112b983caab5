//! The `nurture` binary: everything lives in the library; see `cli`.

// The planner, the scan and the delivery path allocate a little per contact
// (decoded attributes, rendered text, JSON lines); glibc's malloc took a
// quarter of a dry-run's CPU in `perf` (BENCHMARKS.md, "allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    nurture::cli::main()
}
