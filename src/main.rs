//! The `nurture` binary: everything lives in the library; see `cli`.

/// mimalloc rather than glibc's malloc: the daemon allocates and frees small
/// rows, bodies and requests on several threads at once, and glibc's
/// allocator was a sixth of the end-to-end profile (`malloc_consolidate`,
/// arena locks); see BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    nurture::cli::main()
}
