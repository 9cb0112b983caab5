//! The `nurture` binary: everything lives in the library; see `cli`.

// mimalloc rather than glibc's malloc: the planner, the scan and the delivery
// path allocate and free small values per contact (decoded attributes,
// rendered text, JSON lines, requests) on several threads; glibc's allocator
// was a quarter of a dry-run's samples and a sixth of the end-to-end profile
// (BENCHMARKS.md, "The allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    nurture::cli::main()
}
